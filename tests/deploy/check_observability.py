#!/usr/bin/env python3
"""Checks the Grafana dashboard, the alerting rules and the prometheus-adapter rules.

  * deploy/grafana/catserve-dashboard.json parses, has unique panel ids and non-overlapping grid
    positions, and every panel query uses the Prometheus data source variable;
  * every PromQL expression in it parses: they are written, with Grafana's variables replaced by
    values, as recording rules into a temporary rule file and `promtool check rules` parses it;
  * every metric name queried by the dashboard, the alerting rules and the adapter rules is one
    the daemon exports (tests/deploy/metric_names.txt; histograms by base name + _bucket/_sum/_count);
  * `promtool check rules` and `promtool test rules` (tests/deploy/catserve-rules.test.yaml) pass.
Prints 'N passed, N failed'; exits non-zero on any failure.
"""
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DASHBOARD = ROOT / "deploy/grafana/catserve-dashboard.json"
RULES = ROOT / "deploy/prometheus/catserve-rules.yaml"
ADAPTER = ROOT / "deploy/prometheus/adapter-rules.yaml"

# Series Prometheus makes itself, not exported by the daemon.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
                "${datasource}": "prom", "$namespace": ".*", "$pod": ".*", "$chunk_size": ".*"}

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print(("ok    " if ok else "FAIL  ") + what)
    return ok


def known_metrics():
    names, hist = set(), set()
    for line in (HERE / "metric_names.txt").read_text().splitlines():
        line = line.split("#", 1)[0].split()
        if not line:
            continue
        names.add(line[0])
        if len(line) > 1 and line[1] == "histogram":
            hist.add(line[0])
    return names, hist


def base_name(name, hist):
    for suf in ("_bucket", "_sum", "_count"):
        if name.endswith(suf) and name[: -len(suf)] in hist:
            return name[: -len(suf)]
    return name


STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
BRACES = re.compile(r"\{[^{}]*\}")
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "le", "inf", "nan", "atan2",
}


def metric_refs(expr):
    """Metric names in a PromQL expression: identifiers that are not functions, aggregations,
    keywords, label names inside {...} or (...) grouping clauses, or strings."""
    e = STRING.sub('""', expr)
    e = BRACES.sub("{}", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", "[]", e)  # ranges / subqueries
    refs = set()
    for m in IDENT.finditer(e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("("):  # function or aggregation
            continue
        if word.lower() in PROMQL_WORDS or re.fullmatch(r"\d.*", word):
            continue
        prev = e[: m.start()].rstrip()
        if prev.endswith(("offset",)):
            continue
        refs.add(word)
    return refs


def check_names(where, exprs, names, hist):
    bad = {}
    for e in exprs:
        for ref in metric_refs(e):
            if ref in PROMETHEUS_OWN:
                continue
            if base_name(ref, hist) not in names:
                bad.setdefault(ref, e)
    check(not bad, f"{where}: every metric is exported by catserve" +
          "".join(f"\n        unknown {k} in: {v}" for k, v in bad.items()))
    return bad


def panel_targets(dash):
    out = []

    def walk(panels):
        for p in panels:
            out.append(p)
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    return out


def main():
    names, hist = known_metrics()
    # The name extractor itself: finds metrics, skips functions, keywords, labels and strings.
    probe = ('histogram_quantile(0.9, sum by (le, chunk_size) (rate(catserve_bogus_bucket{outcome="x_y"}[5m]))) '
             '/ on (pod) group_left(version) catserve_build_info > bool 2 unless absent(process_typo)')
    check(metric_refs(probe) == {"catserve_bogus_bucket", "catserve_build_info", "process_typo"},
          f"metric name extractor finds exactly the metrics ({sorted(metric_refs(probe))})")
    promtool = shutil.which("promtool")
    check(promtool is not None, "promtool is installed (Debian package prometheus)")

    # Dashboard.
    try:
        dash = json.loads(DASHBOARD.read_text())
        check(True, "dashboard JSON parses")
    except ValueError as e:
        check(False, f"dashboard JSON parses ({e})")
        dash = {"panels": []}
    panels = panel_targets(dash)
    ids = [p["id"] for p in panels]
    check(len(ids) == len(set(ids)), f"dashboard: {len(ids)} unique panel ids")
    cells = {}
    overlap = []
    for p in panels:
        g = p["gridPos"]
        for yy in range(g["y"], g["y"] + g["h"]):
            for xx in range(g["x"], g["x"] + g["w"]):
                if (xx, yy) in cells:
                    overlap.append((p["title"], cells[(xx, yy)]))
                cells[(xx, yy)] = p["title"]
        if g["x"] + g["w"] > 24:
            overlap.append((p["title"], "right edge"))
    check(not overlap, f"dashboard: panels do not overlap {sorted(set(overlap))[:3]}")
    exprs = []
    for p in panels:
        for t in p.get("targets", []):
            exprs.append(t["expr"])
            check(t.get("datasource", {}).get("uid") == "${datasource}",
                  f"dashboard: '{p['title']}' {t['refId']} uses the $datasource variable")
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            m = re.search(r"label_values\((.*),\s*[a-z_]+\)\s*$", q["query"])
            if m:
                exprs.append(m.group(1))
    check(len(exprs) >= 20, f"dashboard: {len(exprs)} queries")
    check_names("dashboard", exprs, names, hist)
    used = {base_name(r, hist) for e in exprs for r in metric_refs(e)}
    print(f"      dashboard covers {len(used & names)}/{len(names)} exported metrics; "
          f"not shown: {sorted(names - used)}")

    if promtool:
        with tempfile.TemporaryDirectory() as tmp:
            rules = []
            for i, e in enumerate(exprs):
                for k, v in GRAFANA_VARS.items():
                    e = e.replace(k, v)
                rules.append({"record": f"dashboard:query_{i}", "expr": e})
            f = pathlib.Path(tmp) / "dashboard-queries.yaml"
            f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
            r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
            check(r.returncode == 0, f"dashboard: all {len(rules)} queries parse as PromQL (promtool)"
                  + ("\n" + r.stdout + r.stderr if r.returncode else ""))

    # Alerting rules.
    doc = yaml.safe_load(RULES.read_text())
    rule_exprs = [r["expr"] for g in doc["groups"] for r in g["rules"]]
    alerts = {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}
    for a in ("CatserveQueueGrowing", "CatserveKVPoolSaturated", "CatserveHighErrorRate", "CatserveTTFTHigh"):
        check(a in alerts, f"rules: alert {a}")
    check_names("rules", rule_exprs, names, hist)
    if promtool:
        r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
        check(r.returncode == 0, "promtool check rules deploy/prometheus/catserve-rules.yaml"
              + ("\n" + r.stdout + r.stderr if r.returncode else ""))
        r = subprocess.run([promtool, "test", "rules", "catserve-rules.test.yaml"], cwd=HERE,
                           capture_output=True, text=True)
        check(r.returncode == 0, "promtool test rules tests/deploy/catserve-rules.test.yaml"
              + ("\n" + r.stdout + r.stderr if r.returncode else ""))

    # prometheus-adapter rules.
    adapter = yaml.safe_load(ADAPTER.read_text())
    series = [re.sub(r"\{.*\}", "", r["seriesQuery"]) for r in adapter["rules"]["custom"]]
    check(series and all(base_name(s, hist) in names for s in series),
          f"adapter rules: series {series} are exported")
    for r in adapter["rules"]["custom"]:
        q = r["metricsQuery"].replace("<<.GroupBy>>", "pod").replace("<<.Series>>", series[0]) \
            .replace("<<.LabelMatchers>>", 'namespace="x"')
        check(set(r["resources"]["overrides"]) == {"namespace", "pod"} and ("sum by (pod)" in q or "max by (pod)" in q),
              f"adapter rules: {r['name']['as']} aggregates per pod")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
