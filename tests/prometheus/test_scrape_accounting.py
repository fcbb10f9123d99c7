"""A real Prometheus scraping a real catserve: after a known workload (workload.py), what
Prometheus stored must equal what the gRPC clients saw, series by series.

Prometheus (Debian's /usr/bin/prometheus) runs with its own temporary config and TSDB and listens
on 127.0.0.1 only; it scrapes the daemon's /metrics every second. The test polls the query API
until a scrape taken after the last request is visible and every figure has settled (the
cancelled request ends on the server asynchronously), then compares.
"""

import time

import workload

JOB = '{job="catserve"}'
SETTLE_S = 30


def by(prom, promql, *labels):
    """{label values: sample value} of an instant query; the key is the tuple of the values of
    `labels`, the value itself for one label, "" for none."""
    out = {}
    for metric, value in prom.query(promql):
        key = tuple(metric.get(label, "") for label in labels)
        out[key if len(key) > 1 else (key[0] if key else "")] = value
    return out


def observed(prom):
    """Everything the test compares, as Prometheus has it now."""
    return {
        "generation_tokens": by(
            prom, f"sum by (chunk_size) (catserve_generation_tokens_total{JOB})", "chunk_size"),
        "prompt_tokens": by(
            prom, f"sum by (chunk_size) (catserve_prompt_tokens_total{JOB})", "chunk_size"),
        # Every (outcome, chunk size) series exists from the first use of a chunk size, at 0.
        "finished": {k: v for k, v in by(
            prom, f"sum by (outcome, chunk_size) (catserve_requests_finished_total{JOB})",
            "outcome", "chunk_size").items() if v != 0},
        "ttft_count": by(
            prom, f"sum by (chunk_size) (catserve_time_to_first_token_seconds_count{JOB})",
            "chunk_size"),
        "e2e_count": by(
            prom, f"sum by (chunk_size) (catserve_e2e_request_latency_seconds_count{JOB})",
            "chunk_size"),
        "running": by(prom, f"catserve_requests_running{JOB}", "chunk_size"),
        "waiting": by(prom, f"catserve_requests_waiting{JOB}", "chunk_size"),
        "kv_pages_used": by(prom, f"catserve_kv_pages_used{JOB}"),
        "kv_pool_usage_ratio": by(prom, f"catserve_kv_pool_usage_ratio{JOB}"),
    }


def expected(seen, chunk_sizes, cancelled_tokens):
    """What the clients saw, in the shape of observed(). `cancelled_tokens` is the server's
    count for the cancelled stream's chunk size, checked separately against its bounds."""
    cs_all = sorted(chunk_sizes)
    c = workload.CANCEL_CHUNK_SIZE
    generated = {str(cs): float(seen.generated[cs]) for cs in cs_all}
    generated[str(c)] = cancelled_tokens
    prompt = {str(cs): float(seen.prompt[cs]) for cs in cs_all}
    prompt[str(c)] = 8.0  # the cancelled request's prompt: 8 token ids
    return {
        "generation_tokens": generated,
        "prompt_tokens": prompt,
        "finished": {(o, str(cs)): float(n) for (o, cs), n in seen.finished.items()},
        "ttft_count": {str(cs): float(seen.with_tokens[cs]) for cs in cs_all},
        "e2e_count": {str(cs): float(seen.latency[cs]) for cs in cs_all},
        "running": {str(cs): 0.0 for cs in cs_all},
        "waiting": {str(cs): 0.0 for cs in cs_all},
        "kv_pages_used": {"": 0.0},
        "kv_pool_usage_ratio": {"": 0.0},
    }


def test_prometheus_sees_what_the_clients_saw(stubs, channel, prometheus):
    pb2, pb2_grpc = stubs
    stub = pb2_grpc.GenerationStub(channel)
    info = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)

    # Prometheus scrapes the daemon before any request: up == 1, and the series of every chunk
    # size the model serves already exist at 0 (the daemon creates them at start).
    deadline = time.monotonic() + SETTLE_S
    while by(prometheus, f"up{JOB}") != {"": 1.0}:
        assert time.monotonic() < deadline, f"no successful scrape:\n{prometheus.log()}"
        time.sleep(0.2)
    served = {str(cs) for cs in info.chunk_sizes}
    assert by(prometheus, f"catserve_generation_tokens_total{JOB}", "chunk_size") == dict.fromkeys(
        served, 0.0)
    assert by(prometheus, f"catserve_build_info{JOB}", "model") == {"tiny": 1.0}

    seen = workload.run(pb2, stub, info.default_chunk_size)
    last_request_end = time.time()
    chunk_sizes = set(info.chunk_sizes)
    assert {2, 8, 16} <= set(seen.generated), seen.generated
    c = str(workload.CANCEL_CHUNK_SIZE)

    # Poll until a scrape newer than the last request is visible and the figures agree.
    deadline = time.monotonic() + SETTLE_S
    while True:
        scraped_at = by(prometheus, f"timestamp(up{JOB})").get("", 0.0)
        if scraped_at > last_request_end:
            got = observed(prometheus)
            want = expected(seen, chunk_sizes, got["generation_tokens"].get(c, -1.0))
            if got == want or time.monotonic() > deadline:
                break
        assert time.monotonic() < deadline, (
            f"no scrape after the last request within {SETTLE_S}s:\n{prometheus.log()}")
        time.sleep(0.5)

    # The cancelled stream: the server counts every token it generated, at least those the client
    # received before cancelling, at most max_tokens.
    cancelled = got["generation_tokens"].get(c, -1.0)
    assert seen.cancelled_received <= cancelled <= workload.CANCEL_MAX_TOKENS, (
        f"chunk size {c}: server counted {cancelled} generated tokens, the cancelled client "
        f"received {seen.cancelled_received} of at most {workload.CANCEL_MAX_TOKENS}")
    for key in want:
        assert got[key] == want[key], f"{key}: Prometheus has {got[key]}, clients saw {want[key]}"
    assert sum(got["running"].values()) == 0
    print(f"\nclients saw: generated {dict(seen.generated)}, finished {dict(seen.finished)}, "
          f"cancelled stream: {seen.cancelled_received} received / {cancelled:g} generated")
