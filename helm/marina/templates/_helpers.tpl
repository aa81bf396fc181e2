{{/* The chart's name. */}}
{{- define "marina.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: objects are named after it. */}}
{{- define "marina.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "marina.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: immutable, so only name and instance. */}}
{{- define "marina.selectorLabels" -}}
app.kubernetes.io/name: {{ include "marina.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "marina.labels" -}}
helm.sh/chart: {{ include "marina.chart" . }}
{{ include "marina.selectorLabels" . }}
app.kubernetes.io/version: {{ include "marina.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: marina
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "marina.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "marina.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "marina.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{- define "marina.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository (include "marina.imageTag" .) .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (include "marina.imageTag" .) -}}
{{- end -}}
{{- end -}}

{{/* More than one pod may run at once. */}}
{{- define "marina.multiNode" -}}
{{- if or (gt (int .Values.replicaCount) 1) (and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) 1)) -}}true{{- end -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: above server.shutdown_delay_ms + server.drain_timeout_ms. Computed
(sum rounded up, plus the margin) unless set; a value set too short fails the render.
*/}}
{{- define "marina.terminationGracePeriodSeconds" -}}
{{- $server := .Values.config.server -}}
{{- $sumMs := add (int64 $server.shutdown_delay_ms) (int64 $server.drain_timeout_ms) -}}
{{- $sumSecs := div (add $sumMs 999) 1000 -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $sumSecs (int64 .Values.terminationGraceMarginSeconds) -}}
{{- else -}}
{{- $set := int64 .Values.terminationGracePeriodSeconds -}}
{{- if le $set $sumSecs -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed config.server.shutdown_delay_ms + config.server.drain_timeout_ms (%d ms = %d s): Kubernetes would kill draining pods. Raise it, or leave it null to have it computed" $set $sumMs $sumSecs) -}}
{{- end -}}
{{- $set -}}
{{- end -}}
{{- end -}}

{{/* Values that must be given: fail with a message saying what and why. */}}
{{- define "marina.validate" -}}
{{- if .Values.redis.enabled -}}
{{- if not .Values.redis.existingSecret.name -}}
{{- fail "redis.existingSecret.name is required: the name of an existing Secret whose key redis.existingSecret.key (default \"redis-url\") holds the Redis URL, e.g. redis://:password@redis:6379/0. The chart never holds secret values. (redis.enabled=false runs the in-memory store: a single node.)" -}}
{{- end -}}
{{- if not .Values.cluster.existingSecret.name -}}
{{- fail "cluster.existingSecret.name is required with Redis: the name of an existing Secret whose key cluster.existingSecret.key (default \"secret\") holds the cluster secret (at least 16 characters; e.g. `kubectl create secret generic marina-cluster --from-literal=secret=$(openssl rand -hex 32)`). Nodes sharing Redis authenticate forwarded requests with it." -}}
{{- end -}}
{{- end -}}
{{- if and .Values.admin.enabled (not .Values.admin.apiKeys) (not .Values.admin.oauth) -}}
{{- fail "admin.apiKeys (or admin.oauth) is required while admin.enabled: the admin listener (admin API and /metrics) binds the pod's address, where Marina refuses to serve it without an administrator credential. `marina keys new --subject ops` prints a key and its sha256 digest; put {subject, sha256} in admin.apiKeys and keep the key itself elsewhere." -}}
{{- end -}}
{{- range $id, $t := .Values.tenants -}}
{{- if not (and (kindIs "map" $t) (hasKey $t "auth")) -}}
{{- fail (printf "tenants.%s.auth is required: Marina refuses to serve a tenant without authentication on a non-loopback address (use auth: {anonymous: true} to serve it openly on purpose)" $id) -}}
{{- end -}}
{{- end -}}
{{- if and (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) -}}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) -}}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" -}}
{{- end -}}
{{- $_ := include "marina.terminationGracePeriodSeconds" . -}}
{{- end -}}

{{/* Where the cluster secret is mounted. */}}
{{- define "marina.clusterSecretDir" -}}/var/run/secrets/marina/cluster{{- end -}}

{{/* The prometheus-operator objects may be rendered. */}}
{{- define "marina.monitoringCRDs" -}}
{{- if or .Values.monitoring.skipCapabilityCheck (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") -}}true{{- end -}}
{{- end -}}
