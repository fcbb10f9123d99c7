#!/usr/bin/env python3
"""Proof that helm/catserve renders and that what it renders is valid Kubernetes.

For the default values and each tests/deploy/values-*.yaml:
  * `helm lint --strict` (Helm SDK) and values.schema.json validation,
  * render with Helm's template engine (render_chart.py),
  * every object validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict:
    unknown fields rejected) for the oldest Kubernetes the set supports and the newest known;
    CRD kinds (ServiceMonitor, GRPCRoute, HTTPRoute, InferencePool) against the JSON schemas in
    crd-schemas/,
  * contract checks: every daemon flag on the command line (or in the flagfile), ports and
    probes, shutdown timing, security context, GPU request on/off, HPA metrics served by the
    prometheus-adapter rules and exported by the daemon, the OpenAI API port on the container and
    the Services, and an InferencePool that selects the pods on that port and an HTTPRoute that
    sends to the pool (checked to catch a broken pool, port or route, too).
Then values that must be refused are refused, and deploy/manifests/ matches a fresh render.
Prints 'N passed, N failed'; exits non-zero on any failure.
"""
import json
import pathlib
import re
import sys
import tempfile

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import render_chart  # noqa: E402
import helm_python as helm  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
ROOT = render_chart.ROOT
LATEST = kubernetes_validate.utils.latest_version()

# The daemon's flags (server/ contract), read from server/main.cc: every one must be reachable
# from the chart.
DAEMON_FLAGS = re.findall(r"^ABSL_FLAG\([^,]+,\s*(\w+)", (ROOT / "server/main.cc").read_text(), re.M)
# Flags of the gRPC port's security, passed when security.tls / security.authTokens ask for them.
SECURITY_FLAGS = ["tls_cert", "tls_key", "tls_client_ca", "tls_reload_seconds", "auth_tokens_file"]
DAEMON_FLAGS = [f for f in DAEMON_FLAGS if f not in SECURITY_FLAGS]

# name -> (values files, oldest Kubernetes version the set must validate against[, values on top])
SETS = {
    "default": ([], "1.27.0"),
    "gpu": (["values-gpu.yaml"], "1.30.0"),          # native preStop sleep action: 1.30+
    "cpu": (["values-cpu.yaml"], "1.27.0"),
    "autoscaling": (["values-autoscaling.yaml"], "1.27.0"),
    "security": (["values-security.yaml"], "1.27.0"),
    "inference-gateway": (["values-inference-gateway.yaml"], "1.27.0"),
    "openai-off": ([], "1.27.0", {"openai": {"enabled": False}}),
}

CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): "grpcroute-gateway.networking.k8s.io-v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproute-gateway.networking.k8s.io-v1.json",
    ("inference.networking.k8s.io/v1", "InferencePool"): "inferencepool-inference.networking.k8s.io-v1.json",
}

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {what}")
    else:
        failed += 1
        print(f"FAIL  {what}")
    return ok


def metric_names():
    names = set()
    for line in (HERE / "metric_names.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line.split()[0])
    return names


def validate_object(obj, versions):
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRD_SCHEMAS:
        schema = json.loads((HERE / "crd-schemas" / CRD_SCHEMAS[key]).read_text())
        errs = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
        return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errs]
    errs = []
    for v in versions:
        try:
            kubernetes_validate.validate(obj, v, strict=True)
        except kubernetes_validate.ValidationError as e:
            errs.append(f"k8s {v}: {'/'.join(map(str, e.path))}: {e.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
            errs.append(f"k8s {v}: no schema: {e}")
    return errs


def objects_of(rendered):
    objs = []
    for path, text in render_chart.manifests(rendered).items():
        for doc in yaml.safe_load_all(text):
            if doc:
                objs.append((path, doc))
    return objs


def by_kind(objs, kind):
    return [o for _, o in objs if o["kind"] == kind]


def contract_checks(name, values, objs):
    merged = values_merged(values)
    dep = by_kind(objs, "Deployment")
    if not check(len(dep) == 1, f"{name}: one Deployment"):
        return
    dep = dep[0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    args = c["args"]
    cms = by_kind(objs, "ConfigMap")
    flagfile = cms[0]["data"]["catserve.flags"] if cms else ""
    given = {a[2:].split("=", 1)[0] for a in args if a.startswith("--")}
    given |= {l[2:].split("=", 1)[0] for l in flagfile.splitlines() if l.startswith("--")}
    missing = [f for f in DAEMON_FLAGS if f not in given]
    check(not missing, f"{name}: every daemon flag is passed (missing: {missing})")
    if merged["config"]["mode"] == "flagfile":
        check("--flagfile=/etc/catserve/catserve.flags" in args, f"{name}: --flagfile on the command line")
        check(any(m.get("mountPath") == "/etc/catserve" for m in c["volumeMounts"]), f"{name}: ConfigMap mounted")
    else:
        envs = {e["name"] for e in c.get("env", [])}
        refs = [a.split("$(", 1)[1].rstrip(")") for a in args if "$(" in a]
        check(refs and all(r in envs for r in refs), f"{name}: every $(VAR) in args is defined in env")
    tiers = ",".join(f"{k}={v}" for k, v in sorted(merged["server"]["tiers"].items()))
    if name == "default":
        check("balanced=8:16" in tiers, f"{name}: tier balanced may degrade to 16, as the daemon's default")
    check(cms and cms[0]["data"]["tiers"] == tiers, f"{name}: ConfigMap tiers == {tiers}")
    check(f"--device={merged['device']}" in args, f"{name}: --device={merged['device']}")
    check(f"--drain_grace_seconds={merged['server']['drainGraceSeconds']}" in args, f"{name}: drain grace passed")

    check(f"--reflection={str(merged['security']['reflection']).lower()}" in args,
          f"{name}: --reflection={str(merged['security']['reflection']).lower()}")
    tls, tokens = merged["security"]["tls"], merged["security"]["authTokens"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    if tls["enabled"] and tokens["secretName"] and tls["clientCA"]:
        missing = [f for f in SECURITY_FLAGS if f not in given]
        check(not missing, f"{name}: every security flag is passed (missing: {missing})")
    if tls["enabled"]:
        check(secrets.get("tls") == tls["secretName"] and mounts.get("tls") == "/etc/catserve-tls"
              and "--tls_cert=/etc/catserve-tls/tls.crt" in args and "--tls_key=/etc/catserve-tls/tls.key" in args,
              f"{name}: the TLS Secret is mounted where --tls_cert and --tls_key read it")
    else:
        check(not any(a.startswith("--tls_") for a in args) and "tls" not in secrets, f"{name}: no TLS flags")
    if tokens["secretName"]:
        check(secrets.get("auth-tokens") == tokens["secretName"]
              and f"--auth_tokens_file=/etc/catserve-auth/{tokens['key']}" in args,
              f"{name}: the tokens Secret is mounted where --auth_tokens_file reads it")
    else:
        check(not any(a.startswith("--auth_") for a in args) and "auth-tokens" not in secrets,
              f"{name}: no token flags")
    if tls["enabled"]:
        # The kubelet's gRPC probe speaks plaintext only.
        merged["probes"]["type"] = "http"

    # Ports, probes.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    want = {"grpc": merged["server"]["grpcPort"], "http-metrics": merged["server"]["httpPort"]}
    openai = merged["openai"]["enabled"]
    if openai:
        want["openai"] = merged["server"]["openaiPort"]
        check(f"--openai_listen=0.0.0.0:{want['openai']}" in args,
              f"{name}: --openai_listen=0.0.0.0:{want['openai']} (the `openai` container port)")
    else:
        check("--openai_listen=" in args, f"{name}: --openai_listen= (OpenAI API off)")
    check(ports == want, f"{name}: container ports {' + '.join(want)}")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = c.get(probe, {})
        if merged["probes"]["type"] == "grpc":
            check(p.get("grpc", {}).get("port") == merged["server"]["grpcPort"], f"{name}: {probe} is native gRPC")
        else:
            check("httpGet" in p, f"{name}: {probe} is HTTP")
    if merged["probes"]["type"] == "grpc":
        check(c["readinessProbe"]["grpc"]["service"] == "catserve.v1.Generation",
              f"{name}: readiness checks service catserve.v1.Generation")
    else:
        check(c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz",
              f"{name}: HTTP probes on /readyz and /healthz")

    # Shutdown timing.
    sleep = merged["lifecycle"]["preStop"]["sleepSeconds"]
    tgp = pod["terminationGracePeriodSeconds"]
    check(tgp > merged["server"]["drainGraceSeconds"] + sleep,
          f"{name}: terminationGracePeriodSeconds {tgp} > drain {merged['server']['drainGraceSeconds']} + preStop {sleep}")
    if sleep:
        check("preStop" in c.get("lifecycle", {}), f"{name}: preStop hook")

    # Security.
    sc = c["securityContext"]
    check(sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
          and sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: non-root, read-only root, no escalation, drop ALL")
    check(any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), f"{name}: writable /tmp")

    # GPU on/off.
    res = json.dumps(c.get("resources", {}))
    if merged["device"] == "cuda":
        gpu = c["resources"]["limits"].get(merged["gpu"]["resourceName"])
        check(str(gpu) == str(merged["gpu"]["count"]), f"{name}: requests {merged['gpu']['count']} GPU")
    else:
        check("nvidia.com/gpu" not in res and "nvidia.com/gpu" not in json.dumps(pod.get("tolerations", [])),
              f"{name}: CPU-only: no GPU request or toleration")

    # Model source.
    src = merged["model"]["source"]
    vols = {v["name"]: v for v in pod["volumes"]}
    if src == "image":
        check("model" not in vols, f"{name}: model baked in the image, no model volume")
    else:
        kind = {"pvc": "persistentVolumeClaim", "hostPath": "hostPath", "emptyDir": "emptyDir"}[src]
        check(kind in vols.get("model", {}), f"{name}: model volume is {kind}")
    if src == "emptyDir":
        check(pod.get("initContainers", [{}])[0].get("name") == "fetch-model", f"{name}: initContainer fetches the model")

    # Services.
    svcs = {s["metadata"]["name"]: s for s in by_kind(objs, "Service")}
    main = svcs[dep["metadata"]["name"]]
    sp = {p["name"]: p for p in main["spec"]["ports"]}
    check(sp.get("grpc", {}).get("appProtocol") == "grpc" and "http-metrics" in sp,
          f"{name}: Service ports grpc (appProtocol grpc) and http-metrics")
    scheme = "https" if tls["enabled"] else "http"
    if openai:
        o = sp.get("openai", {})
        check(o.get("port") == merged["service"]["openaiPort"] and o.get("targetPort") == "openai"
              and o.get("appProtocol") == scheme,
              f"{name}: Service port openai {merged['service']['openaiPort']} -> openai (appProtocol {scheme})")
    else:
        check("openai" not in sp, f"{name}: no Service port openai")
    if merged["service"]["headless"]["enabled"]:
        h = svcs.get(dep["metadata"]["name"] + "-headless")
        check(h is not None and h["spec"]["clusterIP"] == "None", f"{name}: headless Service")
        hp = {p["name"]: p for p in h["spec"]["ports"]} if h else {}
        check(all(hp.get(n, {}).get("port") == v and hp[n].get("targetPort") == n for n, v in want.items())
              and set(hp) == set(want), f"{name}: headless Service ports are the pod's ({', '.join(want)})")
    for ing in by_kind(objs, "Ingress"):
        backends = [p["backend"]["service"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
        port = "openai" if ing["metadata"]["name"].endswith("-openai") else "grpc"
        check(backends and all(b["name"] == main["metadata"]["name"] and b["port"] == {"name": port} for b in backends),
              f"{name}: Ingress {ing['metadata']['name']} sends to Service port {port}")
    if merged["openai"]["ingress"]["enabled"] and openai:
        check(any(i["metadata"]["name"].endswith("-openai") for i in by_kind(objs, "Ingress")),
              f"{name}: Ingress for the OpenAI port")

    # Inference gateway: InferencePool and HTTPRoute.
    pools, routes = by_kind(objs, "InferencePool"), by_kind(objs, "HTTPRoute")
    if merged["inferencePool"]["enabled"]:
        check(len(pools) == 1, f"{name}: one InferencePool")
        problems = gateway_problems(objs)
        check(not problems, f"{name}: InferencePool selects the pods on their OpenAI port, HTTPRoute sends to it"
                            + "".join("\n        " + p for p in problems))
        epp = merged["inferencePool"]["endpointPicker"]
        ref = pools[0]["spec"]["endpointPickerRef"] if pools else {}
        check(ref.get("name") == (epp["name"] or f"{dep['metadata']['name']}-epp")
              and ref.get("port") == {"number": epp["port"]} and ref.get("failureMode") == epp["failureMode"],
              f"{name}: endpointPickerRef {ref.get('name')}:{ref.get('port', {}).get('number')} {ref.get('failureMode')}")
        check(len(routes) == (1 if merged["inferencePool"]["httpRoute"]["enabled"] else 0),
              f"{name}: HTTPRoute only with inferencePool.httpRoute.enabled")
    else:
        check(not pools and not routes, f"{name}: no InferencePool, no HTTPRoute")
    for s in svcs.values():
        check(s["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"], f"{name}: Service {s['metadata']['name']} selects the pods")

    # Autoscaling.
    hpas = by_kind(objs, "HorizontalPodAutoscaler")
    if merged["autoscaling"]["enabled"]:
        check(len(hpas) == 1 and "replicas" not in dep["spec"], f"{name}: HPA owns the replica count")
        adapter = yaml.safe_load((ROOT / "deploy/prometheus/adapter-rules.yaml").read_text())
        served = {r["name"]["as"] for r in adapter["rules"]["custom"]}
        known = metric_names()
        for m in hpas[0]["spec"]["metrics"]:
            if m["type"] == "Pods":
                n = m["pods"]["metric"]["name"]
                check(n in served and n in known, f"{name}: HPA metric {n} is exported and served by prometheus-adapter")
        types = [m["type"] for m in hpas[0]["spec"]["metrics"]]
        if merged["autoscaling"]["cpu"]["enabled"]:
            check("Resource" in types, f"{name}: HPA has the CPU fallback")
    else:
        check(not hpas, f"{name}: no HPA")
    sms = by_kind(objs, "ServiceMonitor")
    if merged["serviceMonitor"]["enabled"]:
        check(len(sms) == 1 and sms[0]["spec"]["endpoints"][0]["port"] == "http-metrics"
              and sms[0]["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"],
              f"{name}: ServiceMonitor scrapes http-metrics of the Service")
    if merged["podDisruptionBudget"]["enabled"]:
        check(len(by_kind(objs, "PodDisruptionBudget")) == 1, f"{name}: PodDisruptionBudget")


def gateway_problems(objs):
    """What is wrong with the rendered InferencePool / HTTPRoute: [] when the pool selects the
    Deployment's pods (and nothing but pods with the Deployment's selector labels), targets the
    container's `openai` port, and every HTTPRoute backend is that pool."""
    problems = []
    deps, pools = by_kind(objs, "Deployment"), by_kind(objs, "InferencePool")
    if len(deps) != 1 or len(pools) != 1:
        return [f"{len(deps)} Deployments, {len(pools)} InferencePools"]
    dep, pool = deps[0], pools[0]
    pod_labels = dep["spec"]["template"]["metadata"].get("labels", {})
    sel = pool["spec"].get("selector", {}).get("matchLabels", {})
    if not sel or any(pod_labels.get(k) != v for k, v in sel.items()):
        problems.append(f"selector {sel} does not select the pod labels {pod_labels}")
    if any(dep["spec"]["selector"]["matchLabels"].get(k) != v for k, v in sel.items()):
        problems.append(f"selector {sel} is not within the Deployment's selector {dep['spec']['selector']['matchLabels']}")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    openai = [p["containerPort"] for p in c.get("ports", []) if p["name"] == "openai"]
    targets = [p.get("number") for p in pool["spec"].get("targetPorts", [])]
    if not openai or targets != openai:
        problems.append(f"targetPorts {targets} != the container's openai port {openai}")
    listen = [a.split(":")[-1] for a in c["args"] if a.startswith("--openai_listen=")]
    if [str(t) for t in targets] != listen:
        problems.append(f"targetPorts {targets} != the port of --openai_listen {listen}")
    for route in by_kind(objs, "HTTPRoute"):
        refs = [b for r in route["spec"].get("rules", []) for b in r.get("backendRefs", [])]
        want = ("inference.networking.k8s.io", "InferencePool", pool["metadata"]["name"])
        if not refs or any((b.get("group"), b.get("kind"), b.get("name")) != want for b in refs):
            problems.append(f"HTTPRoute {route['metadata']['name']} backendRefs {refs} are not the InferencePool {want}")
    return problems


def gateway_checks_catch(objs):
    """gateway_problems() must notice a pool on the wrong port, a selector that misses the pods, and
    a route to something else."""
    import copy

    def broken(edit):
        o = copy.deepcopy([x for _, x in objs])
        edit(o)
        return gateway_problems([("", x) for x in o])

    def kind(o, k):
        return next(x for x in o if x["kind"] == k)

    def port(o):
        kind(o, "InferencePool")["spec"]["targetPorts"] = [{"number": 8000}]

    def selector(o):
        kind(o, "InferencePool")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] = "other"

    def extra_label(o):
        kind(o, "InferencePool")["spec"]["selector"]["matchLabels"]["app"] = "vllm"

    def route(o):
        kind(o, "HTTPRoute")["spec"]["rules"][0]["backendRefs"] = [{"name": "catserve", "port": 8080}]

    def container_port(o):
        for p in kind(o, "Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]:
            if p["name"] == "openai":
                p["containerPort"] += 1

    check(not gateway_problems(objs), "gateway checks: the inference-gateway render passes them")
    for what, edit in [("targetPorts on the metrics port", port), ("selector of another release", selector),
                       ("selector with a label the pods lack", extra_label), ("HTTPRoute to the Service", route),
                       ("container port moved", container_port)]:
        problems = broken(edit)
        check(problems, f"gateway checks catch: {what} ({problems[0] if problems else 'not caught'})")


def values_merged(values):
    with helm.Chart.load(str(render_chart.CHART)) as c:
        return c.merge_values(values)


def main():
    lint_msgs = []
    for name, (files, oldest, *inline) in SETS.items():
        values = render_chart.merge(render_chart.load_values([HERE / f for f in files]), *(inline or [{}]))
        report = helm.lint(str(render_chart.CHART), values, strict=True, kube_version="v1.30.0")
        errs = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
        lint_msgs.extend(f"{name}: {m}" for m in errs)
        check(not errs, f"{name}: helm lint --strict ({len(report.get('messages', []))} messages: "
                        f"{[m.get('error') for m in report.get('messages', [])]})")
        try:
            rendered = render_chart.render(values)
        except Exception as e:  # noqa: BLE001
            check(False, f"{name}: renders ({e})")
            continue
        check(True, f"{name}: schema-valid values render with Helm")
        objs = objects_of(rendered)
        versions = sorted({oldest, LATEST})
        for path, obj in objs:
            errs = validate_object(obj, versions)
            label = f"{obj['kind']}/{obj['metadata']['name']}"
            how = "CRD schema" if (obj.get("apiVersion"), obj.get("kind")) in CRD_SCHEMAS else f"k8s {'+'.join(versions)} strict"
            check(not errs, f"{name}: {label} valid ({how})" + ("".join("\n        " + e for e in errs)))
        kinds = sorted({o["kind"] for _, o in objs})
        print(f"      {name}: kinds {kinds}")
        contract_checks(name, values, objs)
        if name == "inference-gateway":
            gateway_checks_catch(objs)

    # Values the chart must refuse (schema or template `fail`).
    bad = {  # what -> (values, substring the refusal must mention)
        "unknown device": ({"device": "tpu"}, "/device"),
        "unknown top-level key": ({"replicas": 3}, "replicas"),
        "tier name with capitals": ({"server": {"tiers": {"Fast": 4}}}, "Fast"),
        "tier range that is not size:coarsest": ({"server": {"tiers": {"fast": "4:x"}}}, "tiers"),
        "unknown pressure policy": ({"server": {"pressurePolicy": "evict"}}, "pressurePolicy"),
        "zero pool": ({"server": {"kvPoolMb": 0}}, "kvPoolMb"),
        "extra arg without --": ({"server": {"extraArgs": ["v=1"]}}, "extraArgs"),
        "grace period not above drain + preStop": ({"terminationGracePeriodSeconds": 30}, "terminationGracePeriodSeconds"),
        "pvc source without a claim": ({"model": {"source": "pvc"}}, "model.source=pvc"),
        "autoscaling with no metric": ({"autoscaling": {"enabled": True, "waitingRequests": {"enabled": False},
                                                        "cpu": {"enabled": False}}}, "at least one"),
        # null deletes the default request, as `--set resources.requests.cpu=null` does.
        "cpu autoscaling without cpu request": ({"autoscaling": {"enabled": True},
                                                 "resources": {"requests": {"cpu": None}}}, "requests.cpu"),
        "GRPCRoute without parentRefs": ({"grpcRoute": {"enabled": True}}, "parentRefs"),
        "PDB with both bounds": ({"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}, "exactly one"),
        "TLS without a Secret": ({"security": {"tls": {"enabled": True}}}, "security.tls.secretName"),
        "tokens key with a slash": ({"security": {"authTokens": {"secretName": "t", "key": "a/b"}}}, "key"),
        "OpenAI port equal to the metrics port": ({"server": {"openaiPort": 8000}}, "must differ"),
        "InferencePool without the OpenAI API": ({"openai": {"enabled": False}, "inferencePool": {"enabled": True}},
                                                 "needs openai.enabled"),
        "HTTPRoute without parentRefs": ({"inferencePool": {"enabled": True, "httpRoute": {"enabled": True}}},
                                         "parentRefs"),
        "unknown endpoint picker failure mode": ({"inferencePool": {"endpointPicker": {"failureMode": "Open"}}},
                                                 "failureMode"),
        "request timeout that is not a Gateway API duration": (
            {"inferencePool": {"httpRoute": {"requestTimeout": "5 minutes"}}}, "requestTimeout"),
    }
    for what, (values, why) in bad.items():
        try:
            render_chart.render(values)
            check(False, f"refused: {what} (it rendered)")
        except Exception as e:  # noqa: BLE001
            lines = str(e).strip().splitlines()
            check(why in str(e), f"refused: {what} ({lines[-1].strip() if lines else type(e).__name__})")

    # Committed plain manifests are the default render.
    with tempfile.TemporaryDirectory() as tmp:
        render_chart.write_dir(render_chart.render({}), tmp)
        fresh = {p.name: p.read_text() for p in pathlib.Path(tmp).glob("*.yaml")}
    committed = {p.name: p.read_text() for p in (ROOT / "deploy/manifests").glob("*.yaml")}
    check(fresh == committed, "deploy/manifests/ is up to date (else run deploy/manifests/generate.sh)")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
