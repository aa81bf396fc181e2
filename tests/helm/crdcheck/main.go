// crdcheck validates the prometheus-operator objects (ServiceMonitor, PodMonitor, PrometheusRule)
// of rendered manifests by strict decoding into the operator's own Go types
// (github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring): an unknown field or a
// wrong type is an error, as the API server's structural schema would make it. It also checks what
// the types carry only as kubebuilder markers (required fields, the Duration pattern, the Scheme
// enum) for the fields the chart sets.
//
// Usage: crdcheck FILE...   (multi-document YAML; other kinds are skipped and counted)
// Exit status 1 when any object is invalid.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"gopkg.in/yaml.v3"
	sigsyaml "sigs.k8s.io/yaml"
)

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

// The CRD patterns and enums (kubebuilder markers in monitoring/v1/types.go).
var (
	durationRe = regexp.MustCompile(`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`)
	schemes    = map[string]bool{"http": true, "https": true, "HTTP": true, "HTTPS": true}
)

func duration(field string, d *monitoringv1.Duration) error {
	if d != nil && !durationRe.MatchString(string(*d)) {
		return fmt.Errorf("%s %q is not a Prometheus duration", field, string(*d))
	}
	return nil
}

func endpoint(i int, port *string, scheme *monitoringv1.Scheme, interval, timeout monitoringv1.Duration) error {
	if port == nil || *port == "" {
		return fmt.Errorf("endpoint %d: port (a named port) is required", i)
	}
	if scheme != nil && !schemes[string(*scheme)] {
		return fmt.Errorf("endpoint %d: scheme %q is not one of http, https", i, string(*scheme))
	}
	if err := duration(fmt.Sprintf("endpoint %d: interval", i), &interval); err != nil {
		return err
	}
	return duration(fmt.Sprintf("endpoint %d: scrapeTimeout", i), &timeout)
}

func check(doc []byte) (string, error) {
	var h header
	if err := sigsyaml.Unmarshal(doc, &h); err != nil {
		return "", err
	}
	if h.APIVersion != "monitoring.coreos.com/v1" {
		return "", nil
	}
	id := h.Kind + "/" + h.Metadata.Name
	if h.Metadata.Name == "" {
		return id, errors.New("metadata.name is empty")
	}
	switch h.Kind {
	case "ServiceMonitor":
		var o monitoringv1.ServiceMonitor
		if err := sigsyaml.UnmarshalStrict(doc, &o); err != nil {
			return id, err
		}
		if len(o.Spec.Endpoints) == 0 {
			return id, errors.New("spec.endpoints is empty")
		}
		for i, e := range o.Spec.Endpoints {
			port := e.Port
			if err := endpoint(i, &port, e.Scheme, e.Interval, e.ScrapeTimeout); err != nil {
				return id, err
			}
		}
		if len(o.Spec.Selector.MatchLabels) == 0 && len(o.Spec.Selector.MatchExpressions) == 0 {
			return id, errors.New("spec.selector selects everything")
		}
	case "PodMonitor":
		var o monitoringv1.PodMonitor
		if err := sigsyaml.UnmarshalStrict(doc, &o); err != nil {
			return id, err
		}
		if len(o.Spec.PodMetricsEndpoints) == 0 {
			return id, errors.New("spec.podMetricsEndpoints is empty")
		}
		for i, e := range o.Spec.PodMetricsEndpoints {
			if err := endpoint(i, e.Port, e.Scheme, e.Interval, e.ScrapeTimeout); err != nil {
				return id, err
			}
		}
		if len(o.Spec.Selector.MatchLabels) == 0 && len(o.Spec.Selector.MatchExpressions) == 0 {
			return id, errors.New("spec.selector selects everything")
		}
	case "PrometheusRule":
		var o monitoringv1.PrometheusRule
		if err := sigsyaml.UnmarshalStrict(doc, &o); err != nil {
			return id, err
		}
		if len(o.Spec.Groups) == 0 {
			return id, errors.New("spec.groups is empty")
		}
		for _, g := range o.Spec.Groups {
			if g.Name == "" || len(g.Rules) == 0 {
				return id, fmt.Errorf("group %q: a name and at least one rule are required", g.Name)
			}
			if err := duration(fmt.Sprintf("group %q: interval", g.Name), g.Interval); err != nil {
				return id, err
			}
			for i, r := range g.Rules {
				if (r.Alert == "") == (r.Record == "") {
					return id, fmt.Errorf("group %q rule %d: exactly one of alert and record", g.Name, i)
				}
				if r.Expr.String() == "" {
					return id, fmt.Errorf("group %q rule %d: expr is empty", g.Name, i)
				}
				if err := duration(fmt.Sprintf("group %q rule %d: for", g.Name, i), r.For); err != nil {
					return id, err
				}
			}
		}
	default:
		return id, fmt.Errorf("unknown kind %s in monitoring.coreos.com/v1", h.Kind)
	}
	return id, nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crdcheck FILE...")
		os.Exit(2)
	}
	bad, good := 0, 0
	for _, path := range os.Args[1:] {
		raw, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for {
			var node yaml.Node
			err := dec.Decode(&node)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
				os.Exit(1)
			}
			if node.Kind == 0 || (len(node.Content) == 1 && node.Content[0].Tag == "!!null") {
				continue
			}
			doc, err := yaml.Marshal(&node)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
				os.Exit(1)
			}
			id, err := check(doc)
			switch {
			case err != nil:
				bad++
				fmt.Fprintf(os.Stderr, "%s: %s: INVALID: %v\n", path, strings.TrimPrefix(id, "/"), err)
			case id != "":
				good++
			}
		}
	}
	fmt.Printf("crdcheck: %d monitoring.coreos.com/v1 object(s) valid, %d invalid\n", good, bad)
	if bad > 0 {
		os.Exit(1)
	}
}
