"""Shared by the dashboard/rule lint (test_lint.py, test_rules.py) and check_live.py: reading the
dashboards, the rule file and the metrics contract, and substituting Grafana variables the way
Grafana's Prometheus data source does."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
DASHBOARD_DIR = REPO / "dashboards"
HELM_DASHBOARD_DIR = REPO / "helm" / "marina" / "files" / "dashboards"
RULES_FILE = REPO / "dashboards" / "prometheus" / "marina-rules.yaml"
HELM_RULES_FILE = REPO / "helm" / "marina" / "files" / "prometheus-rules.yaml"
OPERATIONS_MD = REPO / "docs" / "operations.md"

# Labels Prometheus attaches to every scraped series (static config, or Kubernetes service
# discovery through a ServiceMonitor/PodMonitor), beyond the labels the exporter sets.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}


# --- dashboards -------------------------------------------------------------------------------

@dataclass
class Target:
    dashboard: str  # uid
    panel: str  # title
    panel_type: str
    ref: str
    expr: str
    instant: bool
    table: bool

    @property
    def id(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("marina-*.json"))}


def panels(dashboard: dict):
    """Every panel, rows' nested panels included (rows themselves too)."""
    for p in dashboard.get("panels", []):
        yield p
        for inner in p.get("panels", []) or []:
            yield inner


def targets(dashboard: dict) -> list[Target]:
    out = []
    for p in panels(dashboard):
        for t in p.get("targets", []) or []:
            if "expr" not in t:
                continue
            out.append(Target(dashboard.get("uid", "?"), p.get("title", "?"), p.get("type", "?"),
                              t.get("refId", "?"), t["expr"], bool(t.get("instant")) and not t.get("range"),
                              t.get("format") == "table"))
    return out


# --- Grafana variable substitution ------------------------------------------------------------

# Grafana's prometheusRegularEscape / prometheusSpecialRegexEscape.
def _regex_escape(value: str) -> str:
    value = value.replace("\\", "\\\\\\\\").replace("'", "\\\\'")
    return re.sub(r"([$^*+?.()|\[\]{}])", r"\\\\\1", value)


def format_value(values: list[str] | None, variable: dict | None) -> str:
    """A variable's value as Grafana's Prometheus data source interpolates it. `values is None`
    means "All"."""
    variable = variable or {}
    if values is None:
        if variable.get("allValue"):
            return variable["allValue"]
        values = variable.get("_options", [])
    multi = variable.get("multi") or variable.get("includeAll")
    if not multi:
        return values[0] if values else ""
    if len(values) == 1:
        return _regex_escape(values[0])
    return "(" + "|".join(_regex_escape(v) for v in values) + ")"


def parse_duration(text: str) -> float:
    total, pos = 0.0, 0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text):
        if m.start() != pos:
            raise ValueError(f"bad duration {text!r}")
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"bad duration {text!r}")
    return total


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{int(round(seconds * 1000))}ms"


@dataclass
class Intervals:
    """Grafana's time macros for a query over `range_s` seconds with at most `max_points` points,
    against a data source whose scrape interval is `scrape_s`."""
    range_s: float = 3600
    scrape_s: float = 15
    max_points: int = 1000

    @property
    def interval_s(self) -> float:
        # $__interval: range / max data points, never below the data source's scrape interval.
        return max(math.ceil(self.range_s / self.max_points), self.scrape_s)

    @property
    def rate_interval_s(self) -> float:
        # $__rate_interval = max($__interval + scrape interval, 4 * scrape interval).
        return max(self.interval_s + self.scrape_s, 4 * self.scrape_s)

    def macros(self) -> dict[str, str]:
        return {
            "__rate_interval": fmt_seconds(self.rate_interval_s),
            "__interval": fmt_seconds(self.interval_s),
            "__interval_ms": str(int(self.interval_s * 1000)),
            "__range": fmt_seconds(self.range_s),
            "__range_s": str(int(self.range_s)),
            "__range_ms": str(int(self.range_s * 1000)),
        }


_VAR_RE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)(?::(\w+))?\]\]")


def substitute(expr: str, variables: dict[str, dict], values: dict[str, list[str] | None],
               intervals: Intervals | None = None, macros: dict[str, str] | None = None) -> str:
    """Replace Grafana macros and template variables in `expr`.

    `variables`: the dashboard's variable models by name; `values`: the chosen values by name
    (None or absent = "All"). Unknown `$names` are left alone (PromQL has no `$`, so a leftover
    makes the query fail loudly, which is what a test wants)."""
    macros = macros or (intervals or Intervals()).macros()

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        fmt = m.group(2) or m.group(5)
        if name in macros:
            return macros[name]
        if name not in variables:
            return m.group(0)
        var = variables[name]
        chosen = values.get(name)
        if var.get("type") == "datasource":
            return (chosen or ["prometheus"])[0]
        if fmt == "raw":
            return "|".join(chosen) if chosen else (var.get("allValue") or "")
        return format_value(chosen, var)

    return _VAR_RE.sub(repl, expr)


def dashboard_variables(dashboard: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


# --- rules --------------------------------------------------------------------------------------

def load_rules(path: Path = RULES_FILE) -> dict:
    import yaml
    return yaml.safe_load(path.read_text())


def rules(doc: dict):
    for g in doc["groups"]:
        for r in g["rules"]:
            yield g["name"], r


# --- the metrics contract (docs/operations.md, "Metrics reference") ----------------------------

@dataclass
class Contract:
    metrics: dict[str, set[str]] = field(default_factory=dict)  # series name -> labels
    prefixes: list[str] = field(default_factory=list)  # `process_*`

    def knows(self, name: str) -> bool:
        return name in self.metrics or any(name.startswith(p) for p in self.prefixes)

    def labels(self, name: str) -> set[str] | None:
        return self.metrics.get(name)


def load_contract(path: Path = OPERATIONS_MD) -> Contract:
    text = path.read_text()
    m = re.search(r"^## Metrics reference\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if not m:
        raise ValueError("docs/operations.md has no '## Metrics reference' section")
    contract = Contract()
    for line in m.group(1).splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        types = [t.strip() for t in cells[1].split(" / ")] if cells[1] else [""]
        label_cell = re.sub(r"\([^)]*\)", "", cells[2])
        labels = set(re.findall(r"`([a-z_][a-z0-9_]*)`", label_cell))
        for i, name in enumerate(names):
            kind = types[i] if i < len(types) else types[-1]
            if name.endswith("*"):
                contract.prefixes.append(name.rstrip("*"))
                continue
            if kind.startswith("histogram"):
                contract.metrics[f"{name}_bucket"] = labels | {"le"}
                contract.metrics[f"{name}_sum"] = set(labels)
                contract.metrics[f"{name}_count"] = set(labels)
            else:
                contract.metrics[name] = set(labels)
    # Prometheus' own per-target series.
    contract.metrics["up"] = set()
    return contract


# --- PromQL --------------------------------------------------------------------------------------

def selectors(expr_ast) -> list:
    """Every VectorSelector in a parsed expression (matrix selectors' included)."""
    import promql_parser as pp
    found = []

    def visit(node):
        if isinstance(node, pp.VectorSelector):  # walk() also enters matrix selectors
            found.append(node)
        return None

    pp.walk(expr_ast, visit)
    return found


def range_calls(expr_ast) -> list[tuple[str, float]]:
    """(function name, range seconds) of every function applied to a range vector selector."""
    import promql_parser as pp
    found = []

    def visit(node):
        if isinstance(node, pp.Call):
            for arg in node.args:
                if isinstance(arg, pp.MatrixSelector):
                    found.append((node.func.name, arg.range.total_seconds()))
        return None

    pp.walk(expr_ast, visit)
    return found


def matchers(selector) -> dict[str, tuple[str, str]]:
    """label -> (op, value) of a VectorSelector (the metric name is not a matcher here)."""
    out = {}
    for m in selector.matchers.matchers:
        op = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}.get(
            str(m.op).split(".")[-1], str(m.op))
        out[m.name] = (op, m.value)
    return out
