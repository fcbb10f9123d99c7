"""The live /metrics of a catserve that has served requests (workload.py: chunk sizes 2, 4, 8 and
16, a cancelled stream, rejected calls):

  * `promtool check metrics` finds nothing to say about it;
  * every metric name the Grafana dashboard (deploy/grafana/catserve-dashboard.json) and the
    Prometheus rules (deploy/prometheus/catserve-rules.yaml) query is exposed, with at least one
    sample (a histogram by its _bucket series);
  * tests/deploy/metric_names.txt, the hand-kept list deploy.observability checks those files
    against, matches the live families: names, types and label names, in both directions.
"""

import json
import re
import subprocess
import time

import pytest
import yaml

import workload
from conftest import REPO, find_tool

DASHBOARD = REPO / "deploy" / "grafana" / "catserve-dashboard.json"
RULES = REPO / "deploy" / "prometheus" / "catserve-rules.yaml"
METRIC_NAMES = REPO / "tests" / "deploy" / "metric_names.txt"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+-?\d+)?$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# Metric names in PromQL, roughly: not part of a longer identifier nor of a recording rule's
# level:metric:operation name.
METRIC_REF = re.compile(r"(?<![a-zA-Z0-9_:])(catserve_[a-z0-9_]+|process_[a-z_]+)(?![a-zA-Z0-9_:])")


class Exposition:
    """The families (# TYPE) and samples of a text-format 0.0.4 page."""

    def __init__(self, text):
        self.types = {}     # family -> type
        self.samples = {}   # sample name -> [labels dict]
        self.sample_values = {}  # sample name -> [value]
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(maxsplit=3)
                self.types[name] = kind
            elif line and not line.startswith("#"):
                m = SAMPLE.match(line)
                assert m, f"unparsable sample line: {line!r}"
                labels = dict(LABEL.findall(m.group(2) or ""))
                self.samples.setdefault(m.group(1), []).append(labels)
                self.sample_values.setdefault(m.group(1), []).append(float(m.group(3)))

    def values(self, name):
        return list(self.sample_values.get(name, []))

    def family_samples(self, family):
        names = ([family + s for s in HISTOGRAM_SUFFIXES]
                 if self.types.get(family) in ("histogram", "summary") else [family])
        return [labels for n in names for labels in self.samples.get(n, [])]

    def has(self, ref):
        """`ref`, a name queried by PromQL, is exposed with a sample. A histogram family (its base
        name or <base>_bucket/_sum/_count) counts as exposed when its _bucket series appear."""
        for suffix in ("",) + HISTOGRAM_SUFFIXES:
            base = ref[: len(ref) - len(suffix)] if suffix and ref.endswith(suffix) else ref
            if self.types.get(base) == "histogram":
                return f"{base}_bucket" in self.samples
        return ref in self.samples


def dashboard_queries():
    dash = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels):
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if "expr" in t)
            walk(panel.get("panels", []))

    walk(dash.get("panels", []))
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and var.get("type") == "query":
            exprs.append(query)
    return exprs


def rule_queries():
    doc = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def metric_refs(exprs):
    return {m for e in exprs for m in METRIC_REF.findall(QUOTED.sub('""', str(e)))}


def listed_metrics():
    """tests/deploy/metric_names.txt: name -> (type, sorted label names)."""
    out = {}
    for line in METRIC_NAMES.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            labels = sorted(fields[2].split(",")) if len(fields) > 2 else []
            out[fields[0]] = (fields[1], labels)
    return out


@pytest.fixture(scope="module")
def live(stubs, channel, catserve):
    """/metrics after the workload, once the server is idle again."""
    pb2, pb2_grpc = stubs
    stub = pb2_grpc.GenerationStub(channel)
    info = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
    workload.run(pb2, stub, info.default_chunk_size)
    deadline = time.monotonic() + 15
    while True:
        text = catserve.scrape()
        exposition = Exposition(text)
        idle = (exposition.values("catserve_kv_pages_used") == [0.0] and
                not any(exposition.values("catserve_requests_running")))
        if idle or time.monotonic() > deadline:
            return text, exposition
        time.sleep(0.2)


def test_promtool_check_metrics_finds_nothing(live):
    text, _ = live
    promtool = find_tool("PROMTOOL", "promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=30)
    findings = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not findings, (
        f"promtool check metrics (exit {result.returncode}):\n{findings}")


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_queried_metric_is_exposed(live, source):
    _, exposition = live
    exprs = dashboard_queries() if source == "dashboard" else rule_queries()
    refs = metric_refs(exprs)
    assert len(refs) >= (20 if source == "dashboard" else 5), sorted(refs)
    missing = sorted(r for r in refs if not exposition.has(r))
    assert not missing, (f"{source} queries metrics the daemon does not expose (no sample on a "
                         f"live /metrics after requests at chunk sizes 2, 4, 8, 16): {missing}")


def test_every_family_has_a_sample(live):
    # Metrics that count rare events (preemptions, degrades) must read 0, not be absent, so that
    # rate() and alerts on them work from the start.
    _, exposition = live
    empty = sorted(f for f in exposition.types if not exposition.family_samples(f))
    assert not empty, f"families exposed with # TYPE but no sample: {empty}"


def test_metric_names_list_matches_the_live_families(live):
    _, exposition = live
    listed = listed_metrics()
    live_families = {}
    for family, kind in exposition.types.items():
        labels = set()
        for sample in exposition.family_samples(family):
            labels |= set(sample) - {"le"}
        live_families[family] = (kind, sorted(labels))
    problems = [f"{name}: listed but not exposed" for name in sorted(set(listed) - set(live_families))]
    problems += [f"{name}: exposed but not listed" for name in sorted(set(live_families) - set(listed))]
    problems += [f"{name}: listed as {listed[name]}, live {live_families[name]}"
                 for name in sorted(set(listed) & set(live_families))
                 if listed[name] != live_families[name]]
    assert not problems, "tests/deploy/metric_names.txt vs live /metrics:\n  " + "\n  ".join(problems)
