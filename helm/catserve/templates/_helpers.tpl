{{/* Chart name, truncated to the 63 characters DNS labels allow. */}}
{{- define "catserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's resources. */}}
{{- define "catserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "catserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "catserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "catserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "catserve.labels" -}}
helm.sh/chart: {{ include "catserve.chart" . }}
{{ include "catserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: inference-server
app.kubernetes.io/part-of: catserve
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "catserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "catserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest. */}}
{{- define "catserve.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/* --model_dir value. */}}
{{- define "catserve.modelDir" -}}
{{- if .Values.model.dir }}
{{- .Values.model.dir }}
{{- else }}
{{- printf "%s/%s" (trimSuffix "/" .Values.model.mountPath) .Values.model.name }}
{{- end }}
{{- end }}

{{/* --tiers value: name=size or name=size:coarsest, joined by commas (sorted by name). */}}
{{- define "catserve.tiers" -}}
{{- $pairs := list }}
{{- range $name, $size := .Values.server.tiers }}
{{- if kindIs "string" $size }}
{{- $pairs = append $pairs (printf "%s=%s" $name $size) }}
{{- else }}
{{- $pairs = append $pairs (printf "%s=%d" $name (int $size)) }}
{{- end }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
Tuning flags kept in the ConfigMap, as an ordered list of [flag, configmap key, value].
*/}}
{{- define "catserve.tuningFlags" -}}
{{- $s := .Values.server -}}
- [tiers, tiers, {{ include "catserve.tiers" . | quote }}]
- [default_chunk_size, default-chunk-size, {{ int $s.defaultChunkSize | quote }}]
- [kv_pool_mb, kv-pool-mb, {{ int $s.kvPoolMb | quote }}]
- [kv_dtype, kv-dtype, {{ $s.kvDtype | quote }}]
- [kv_page_entries, kv-page-entries, {{ int $s.kvPageEntries | quote }}]
- [prefix_cache, prefix-cache, {{ $s.prefixCache | quote }}]
- [max_queued, max-queued, {{ int $s.maxQueued | quote }}]
- [max_running, max-running, {{ int $s.maxRunning | quote }}]
- [max_tokens_per_step, max-tokens-per-step, {{ int $s.maxTokensPerStep | quote }}]
- [max_prompt_tokens, max-prompt-tokens, {{ int $s.maxPromptTokens | quote }}]
- [max_new_tokens, max-new-tokens, {{ int $s.maxNewTokens | quote }}]
- [max_prompt_bytes, max-prompt-bytes, {{ int $s.maxPromptBytes | quote }}]
- [pressure_policy, pressure-policy, {{ $s.pressurePolicy | quote }}]
- [check_weights, check-weights, {{ toString $s.checkWeights | quote }}]
- [gpu_memory_fraction, gpu-memory-fraction, {{ toString .Values.gpu.memoryFraction | quote }}]
- [cuda_attention, cuda-attention, {{ .Values.gpu.attention | quote }}]
- [cuda_graphs, cuda-graphs, {{ .Values.gpu.graphs | quote }}]
{{- end }}

{{/* Environment variable name that carries a ConfigMap key in config.mode=env. */}}
{{- define "catserve.envName" -}}
{{- printf "CATSERVE_%s" (. | upper | replace "-" "_") }}
{{- end }}

{{/* terminationGracePeriodSeconds, checked against drain grace + preStop sleep. */}}
{{- define "catserve.terminationGrace" -}}
{{- $drain := int .Values.server.drainGraceSeconds }}
{{- $sleep := int .Values.lifecycle.preStop.sleepSeconds }}
{{- $min := add $drain $sleep }}
{{- if eq (toString .Values.terminationGracePeriodSeconds) "" }}
{{- add $min 15 }}
{{- else }}
{{- $tgp := int .Values.terminationGracePeriodSeconds }}
{{- if le $tgp $min }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed server.drainGraceSeconds + lifecycle.preStop.sleepSeconds (%d)" $tgp $min) }}
{{- end }}
{{- $tgp }}
{{- end }}
{{- end }}

{{/* PVC name used for the model volume. */}}
{{- define "catserve.modelClaimName" -}}
{{- if .Values.model.pvc.existingClaim }}
{{- .Values.model.pvc.existingClaim }}
{{- else }}
{{- printf "%s-model" (include "catserve.fullname" .) }}
{{- end }}
{{- end }}

{{/* Service name of the endpoint picker the InferencePool refers to. */}}
{{- define "catserve.endpointPickerName" -}}
{{- default (printf "%s-epp" (include "catserve.fullname" .) | trunc 63 | trimSuffix "-") .Values.inferencePool.endpointPicker.name }}
{{- end }}
