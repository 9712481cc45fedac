{{/* ---------------------------------------------------------------- names and labels */}}

{{- define "adaptive.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "adaptive.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "adaptive.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels; call with (dict "ctx" $ "component" "control-plane") */}}
{{- define "adaptive.selectorLabels" -}}
app.kubernetes.io/name: {{ include "adaptive.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "adaptive.labels" -}}
helm.sh/chart: {{ include "adaptive.chart" .ctx }}
{{ include "adaptive.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: adaptive
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- component names */}}

{{- define "adaptive.controlPlane.fullname" -}}
{{- printf "%s-control-plane" (include "adaptive.fullname" .) -}}
{{- end -}}

{{- define "adaptive.controlPlane.internalService" -}}
{{- printf "%s-control-plane-internal" (include "adaptive.fullname" .) -}}
{{- end -}}

{{- define "adaptive.controlPlane.serviceAccountName" -}}
{{- if .Values.controlPlane.serviceAccount.create -}}
{{- default (include "adaptive.controlPlane.fullname" .) .Values.controlPlane.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.controlPlane.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "adaptive.harmony.serviceAccountName" -}}
{{- if .Values.harmony.serviceAccount.create -}}
{{- default (printf "%s-harmony" (include "adaptive.fullname" .)) .Values.harmony.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.harmony.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "adaptive.redis.fullname" -}}
{{- printf "%s-redis" (include "adaptive.fullname" .) -}}
{{- end -}}

{{- define "adaptive.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "adaptive.fullname" .) -}}
{{- end -}}

{{- define "adaptive.otel.fullname" -}}
{{- printf "%s-otel-collector" (include "adaptive.fullname" .) -}}
{{- end -}}

{{/* ---------------------------------------------------------------- images */}}

{{/* call with (dict "ctx" $ "image" .Values.controlPlane.image "registry" true) */}}
{{- define "adaptive.image" -}}
{{- $repo := .image.repository -}}
{{- if and .registry .ctx.Values.containerRegistry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" .ctx.Values.containerRegistry) $repo -}}
{{- end -}}
{{- printf "%s:%s" $repo (toString (default .ctx.Chart.AppVersion .image.tag)) -}}
{{- end -}}

{{- define "adaptive.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
{{- if kindIs "string" . }}
  - name: {{ . }}
{{- else }}
  - name: {{ .name }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- env helpers */}}

{{/* Render extra env given as a map (NAME: value | {valueFrom: ...}) or a list of EnvVar. */}}
{{- define "adaptive.extraEnv" -}}
{{- if kindIs "slice" . -}}
{{- range . }}
- {{ toYaml . | nindent 2 | trim }}
{{- end }}
{{- else if kindIs "map" . -}}
{{- range $k, $v := . }}
{{- if kindIs "map" $v }}
- name: {{ $k }}
  {{- toYaml $v | nindent 2 }}
{{- else }}
- name: {{ $k }}
  value: {{ toString $v | quote }}
{{- end }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Merge two extra-env values (map or list) into one map, the second winning. */}}
{{- define "adaptive.mergeEnv" -}}
{{- $out := dict -}}
{{- range $src := . -}}
{{- if kindIs "map" $src -}}
{{- range $k, $v := $src -}}{{- $_ := set $out $k $v -}}{{- end -}}
{{- else if kindIs "slice" $src -}}
{{- range $e := $src -}}
{{- if hasKey $e "valueFrom" -}}
{{- $_ := set $out $e.name (dict "valueFrom" $e.valueFrom) -}}
{{- else -}}
{{- $_ := set $out $e.name (toString (default "" $e.value)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* ---------------------------------------------------------------- secrets */}}

{{- define "adaptive.cp.inline" -}}
{{- $s := .Values.secrets -}}
{{- if or $s.cookiesSecret $s.db.username $s.db.password $s.db.host $s.db.database .Values.auth.oidc.providers -}}true{{- end -}}
{{- end -}}

{{- define "adaptive.harmony.inline" -}}
{{- if or .Values.secrets.modelRegistryUrl .Values.secrets.sharedDirectoryUrl -}}true{{- end -}}
{{- end -}}

{{- define "adaptive.redis.inline" -}}
{{- if .Values.secrets.redisUrl -}}true{{- end -}}
{{- end -}}

{{- define "adaptive.cp.secretName" -}}
{{- if .Values.secrets.existingControlPlaneSecret -}}{{ .Values.secrets.existingControlPlaneSecret }}
{{- else if include "adaptive.cp.inline" . -}}{{ include "adaptive.fullname" . }}-controlplane-inline
{{- else -}}adaptive-controlplane
{{- end -}}
{{- end -}}

{{- define "adaptive.harmony.secretName" -}}
{{- if .Values.secrets.existingHarmonySecret -}}{{ .Values.secrets.existingHarmonySecret }}
{{- else if include "adaptive.harmony.inline" . -}}{{ include "adaptive.fullname" . }}-harmony-inline
{{- else -}}adaptive-harmony
{{- end -}}
{{- end -}}

{{- define "adaptive.redis.secretName" -}}
{{- if .Values.secrets.existingRedisSecret -}}{{ .Values.secrets.existingRedisSecret }}
{{- else if include "adaptive.redis.inline" . -}}{{ include "adaptive.fullname" . }}-redis-inline
{{- else -}}adaptive-redis
{{- end -}}
{{- end -}}

{{- define "adaptive.postgresql.secretName" -}}
{{- default (include "adaptive.postgresql.fullname" .) .Values.postgresql.auth.existingSecret -}}
{{- end -}}

{{/* Fails the render on contradictory values. Included by every template that depends on them. */}}
{{- define "adaptive.validate" -}}
{{- $s := .Values.secrets -}}
{{- if and $s.existingControlPlaneSecret (include "adaptive.cp.inline" .) -}}
{{- fail (printf "secrets.existingControlPlaneSecret (%q) and inline control plane secret values (secrets.cookiesSecret, secrets.db.*, auth.oidc.providers) are both set: use the existing secret OR inline values, not both" $s.existingControlPlaneSecret) -}}
{{- end -}}
{{- if and $s.existingHarmonySecret (include "adaptive.harmony.inline" .) -}}
{{- fail (printf "secrets.existingHarmonySecret (%q) and inline harmony secret values (secrets.modelRegistryUrl, secrets.sharedDirectoryUrl) are both set: use the existing secret OR inline values, not both" $s.existingHarmonySecret) -}}
{{- end -}}
{{- if and $s.existingRedisSecret (include "adaptive.redis.inline" .) -}}
{{- fail (printf "secrets.existingRedisSecret (%q) and inline secrets.redisUrl are both set: use the existing secret OR the inline value, not both" $s.existingRedisSecret) -}}
{{- end -}}
{{- if and .Values.redis.enabled (or $s.existingRedisSecret $s.redisUrl) -}}
{{- fail "redis.enabled is true (in-chart Redis) but secrets.existingRedisSecret or secrets.redisUrl is set: set redis.enabled=false to use an external Redis" -}}
{{- end -}}
{{- if include "adaptive.cp.inline" . -}}
{{- if not $s.cookiesSecret -}}
{{- fail "inline control plane secrets are in use but secrets.cookiesSecret is empty: set it (64+ random characters) or use an existing secret" -}}
{{- end -}}
{{- if not .Values.postgresql.enabled -}}
{{- if not (and $s.db.username $s.db.password $s.db.host $s.db.database) -}}
{{- fail "inline control plane secrets are in use: secrets.db.username, secrets.db.password, secrets.db.host and secrets.db.database are all required (or enable postgresql)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (include "adaptive.harmony.inline" .) (not (and $s.modelRegistryUrl $s.sharedDirectoryUrl)) -}}
{{- fail "inline harmony secrets are in use: set both secrets.modelRegistryUrl and secrets.sharedDirectoryUrl (or use an existing secret)" -}}
{{- end -}}
{{- if .Values.postgresql.enabled -}}
{{- if or $s.db.username $s.db.password $s.db.host $s.db.database -}}
{{- fail "postgresql.enabled is true but secrets.db.* is set: the in-chart PostgreSQL provides the database connection" -}}
{{- end -}}
{{- if not (or .Values.postgresql.auth.password .Values.postgresql.auth.existingSecret) -}}
{{- fail "postgresql.enabled is true: set postgresql.auth.password or postgresql.auth.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.hostname) -}}
{{- fail "ingress.enabled is true: set ingress.hostname" -}}
{{- end -}}
{{- $names := dict -}}
{{- range $p := (include "adaptive.pools" . | fromJson).pools -}}
{{- if hasKey $names $p.slug -}}
{{- fail (printf "harmony compute pools %q and %q have the same name once made DNS-safe (%q): pool names must be unique" (get $names $p.slug) $p.name $p.slug) -}}
{{- end -}}
{{- $_ := set $names $p.slug $p.name -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- compute pools */}}

{{/* Normalised pools as JSON {"pools": [...]}: every per-pool key resolved against harmony.*. */}}
{{- define "adaptive.pools" -}}
{{- $h := .Values.harmony -}}
{{- $raw := concat (default list $h.computePool) (default list $h.computePools) -}}
{{- $out := list -}}
{{- $full := include "adaptive.fullname" . -}}
{{- range $i, $p := $raw -}}
{{- if not $p.name -}}
{{- fail (printf "harmony.computePool[%d] has no name" $i) -}}
{{- end -}}
{{- $slug := regexReplaceAll "[^a-z0-9-]+" (lower (toString $p.name)) "-" | trimAll "-" -}}
{{- $name := printf "%s-harmony-%s" $full $slug | trunc 52 | trimSuffix "-" -}}
{{- $replicas := $h.replicaCount -}}
{{- if hasKey $p "replicaCount" -}}{{- $replicas = $p.replicaCount -}}
{{- else if hasKey $p "replicas" -}}{{- $replicas = $p.replicas -}}
{{- end -}}
{{- $gpus := $h.gpusPerReplica -}}
{{- if hasKey $p "gpusPerReplica" -}}{{- $gpus = $p.gpusPerReplica -}}{{- end -}}
{{- $image := mergeOverwrite (deepCopy $h.image) (default dict $p.image) -}}
{{- $env := include "adaptive.mergeEnv" (list $h.extraEnvVars (default dict $p.extraEnvVars)) | fromJson -}}
{{- $pool := dict
    "name" (toString $p.name)
    "slug" $slug
    "fullname" $name
    "replicas" (int $replicas)
    "gpus" (int $gpus)
    "capabilities" (default $h.capabilities $p.capabilities)
    "nodeSelector" (ternary $p.nodeSelector $h.nodeSelector (hasKey $p "nodeSelector"))
    "tolerations" (ternary $p.tolerations $h.tolerations (hasKey $p "tolerations"))
    "affinity" (ternary $p.affinity $h.affinity (hasKey $p "affinity"))
    "resources" (deepCopy (ternary $p.resources $h.resources (hasKey $p "resources")))
    "image" $image
    "env" $env
    "podAnnotations" (mergeOverwrite (deepCopy (default dict $h.podAnnotations)) (default dict $p.podAnnotations))
    "podLabels" (mergeOverwrite (deepCopy (default dict $h.podLabels)) (default dict $p.podLabels))
    "shmSize" (default $h.shmSize $p.shmSize)
    "terminationGracePeriodSeconds" (ternary $p.terminationGracePeriodSeconds $h.terminationGracePeriodSeconds (hasKey $p "terminationGracePeriodSeconds"))
    "capacityReservation" (default dict $p.capacityReservation)
-}}
{{- $out = append $out $pool -}}
{{- end -}}
{{- toJson (dict "pools" $out) -}}
{{- end -}}

{{/* Pod env for OpenTelemetry; call with (dict "ctx" $ "service" "control-plane") */}}
{{- define "adaptive.otelEnv" -}}
{{- if .ctx.Values.otelCollector.enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ printf "http://%s:4318" (include "adaptive.otel.fullname" .ctx) | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "deployment.environment.name=%s,service.namespace=%s" .ctx.Values.otelCollector.resourceAttributes.environmentName .ctx.Release.Namespace | quote }}
{{- end }}
{{- end -}}

{{/* In-chart Redis URL (plain, no credentials). */}}
{{- define "adaptive.redis.inChartUrl" -}}
{{- printf "redis://%s:%d/0" (include "adaptive.redis.fullname" .) (int .Values.redis.port) -}}
{{- end -}}

{{/*
A Kubernetes quantity as bytes: an integer with an optional suffix (Ki Mi Gi Ti Pi, or k K M G T P
for powers of 1000). Anything else (decimals, exponents, milli) fails with a message.
*/}}
{{- define "adaptive.quantityBytes" -}}
{{- $quantity := toString . -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- /* YAML numbers arrive as floats: 1000000 would print as 1e+06 */ -}}
{{- $quantity = printf "%d" (int64 .) -}}
{{- end -}}
{{- $digits := regexFind "^[0-9]+" $quantity -}}
{{- $suffix := trimPrefix $digits $quantity -}}
{{- $units := dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 "k" 1000 "K" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "P" 1000000000000000 -}}
{{- if or (not $digits) (not (hasKey $units $suffix)) -}}
{{- fail (printf "harmony.cloudCache: cannot turn the size %q into bytes for the model cache budget: write an integer with an optional Ki/Mi/Gi/Ti/Pi or K/M/G/T/P suffix, or set harmony.cloudCache.modelCacheBudget" $quantity) -}}
{{- end -}}
{{- mul (atoi $digits) (get $units $suffix) -}}
{{- end -}}

{{/*
HARMONY_SETTING_MODEL_CACHE_BUDGET from harmony.cloudCache (passed as the context):
modelCacheBudget when set; otherwise modelCacheBudgetPercent of the volume's size in bytes (size
for persistentVolumeClaim, sizeLimit for emptyDir); otherwise empty (harmony's default).
*/}}
{{- define "adaptive.harmony.modelCacheBudget" -}}
{{- $cache := . -}}
{{- if $cache.modelCacheBudget -}}
{{- toString $cache.modelCacheBudget -}}
{{- else -}}
{{- $size := "" -}}
{{- if eq $cache.type "persistentVolumeClaim" -}}
{{- $size = $cache.size -}}
{{- else if eq $cache.type "emptyDir" -}}
{{- $size = $cache.sizeLimit -}}
{{- end -}}
{{- if $size -}}
{{- $bytes := include "adaptive.quantityBytes" $size | int64 -}}
{{- $percent := default 90 $cache.modelCacheBudgetPercent | int64 -}}
{{- div (mul $bytes $percent) 100 -}}
{{- end -}}
{{- end -}}
{{- end -}}
