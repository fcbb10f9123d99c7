"""256 concurrent streamed completions through the OpenAI API, a random third of whose clients hang
up after a random number of chunks: every request ends, the daemon lives, no page or running slot
is held afterwards, and the requests by transport add up.

The clients come from four loopback addresses (127.0.0.2-5, 64 connections each);
test_256_streams_from_one_address is the same load from 127.0.0.1 alone, as a gateway would send
it (the API port takes as many connections from one address as in all).

The daemon serves the shipped model (models/cat-small-en), not the tiny fixture: the tiny model
runs a 100-token request in well under a second, too close to the 100 ms in which the daemon
notices a closed connection to tell whether each hang-up came before its request's end.

CATSERVE_LOAD_SEED picks the clients that hang up and when (default: a fixed seed).
"""

import asyncio
import collections
import os
import pathlib
import random
import time

import pytest

import sse_client
from conftest import CatserveDaemon, metric, stop, transport_counts, wait_for_metric

MODEL = pathlib.Path(__file__).resolve().parents[2] / "models" / "cat-small-en"
CLIENTS = 256
OVERALL_TIMEOUT = 60  # seconds for the whole load; a hung stream fails the test


@pytest.fixture(scope="module")
def busy_server():
    s = CatserveDaemon(f"--model_dir={MODEL}", "--kv_pool_mb=64", "--max_running=256")
    yield s
    stop(s)


async def client(server, i, max_tokens, hang_up_after, local_host):
    """One streamed completion. Returns ("done", usage) when the stream ended with [DONE], or
    ("hung_up", chunks seen) when this client closed it after `hang_up_after` chunks."""
    body = {"prompt": f"Once upon a time, cat number {i}", "max_tokens": max_tokens,
            "temperature": 0.8, "seed": i, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    seen, usage, finish = 0, None, None
    local = (local_host, 0) if local_host else None
    async with sse_client.SseStream("127.0.0.1", server.openai_port, body,
                                    local_addr=local) as stream:
        async for event in stream:
            if event == "[DONE]":
                assert finish == "length" and usage["completion_tokens"] == max_tokens, (
                    i, finish, usage)
                return "done", usage
            if event["choices"]:
                finish = event["choices"][0]["finish_reason"] or finish
                seen += 1
            if event.get("usage"):
                usage = event["usage"]
            if hang_up_after is not None and seen >= hang_up_after and finish is None:
                return "hung_up", seen  # leaving the `async with` closes the connection
    raise AssertionError(f"client {i}: the stream ended without [DONE] after {seen} chunks")


def run_load(server, seed, local_hosts):
    """Runs the load; returns (results, wall seconds): per client, a list of what its requests
    returned (or the exception that ended it)."""
    rng = random.Random(seed)
    hang_ups = set(rng.sample(range(CLIENTS), CLIENTS // 3))

    async def everyone():
        hung_up = asyncio.Event()
        pending = [len(hang_ups)]

        async def hang_up_client(i):
            # A long request (100 tokens), hung up on within its first ten chunks: the daemon
            # notices a closed connection within 100 ms, long before the request could end.
            try:
                return [await client(server, i, 100, rng.randint(1, 10),
                                     local_hosts[i % len(local_hosts)])]
            finally:
                pending[0] -= 1
                if pending[0] == 0:
                    hung_up.set()

        async def steady_client(i):
            # Closed loop, 20-40 tokens a request, until every other client has hung up: the
            # batch stays full while the hang-ups go through.
            done = []
            while not hung_up.is_set() and len(done) < 50:
                done.append(await client(server, i, rng.randint(20, 40), None,
                                         local_hosts[i % len(local_hosts)]))
                i += CLIENTS
            return done

        tasks = [hang_up_client(i) if i in hang_ups else steady_client(i) for i in range(CLIENTS)]
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                                      OVERALL_TIMEOUT)

    start = time.monotonic()
    results = asyncio.run(everyone())
    return results, time.monotonic() - start


def check_after_load(server, before, results):
    errors = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} clients failed, e.g. {errors[:3]}"
    outcomes = collections.Counter(kind for requests in results for kind, _ in requests)
    requests = outcomes["done"] + outcomes["hung_up"]
    hung_up = outcomes["hung_up"]
    assert hung_up == CLIENTS // 3

    # Every page and running slot is given back once the cancellations have gone through.
    text = wait_for_metric(server, "catserve_kv_pages_used", 0, timeout=10)
    assert metric(text, "catserve_kv_pages_used") == 0, text
    text = wait_for_metric(server, "catserve_num_requests_running", 0, timeout=10)
    assert metric(text, "catserve_num_requests_running") == 0
    assert metric(text, "catserve_num_requests_waiting") == 0
    assert server.proc.poll() is None, server.log

    # The requests by transport add up: each ended once, as length (finished, whether or not its
    # client was still there to read the end) or cancelled (its client hung up first).
    after = transport_counts(server)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta["length"] + delta["cancelled"] == requests, (delta, requests)
    assert delta.get("error", 0) == delta.get("rejected", 0) == delta.get("stop", 0) == 0, delta
    assert delta.get("deadline_exceeded", 0) == 0, delta
    # Every client that hung up did so long before its request could end: each was cancelled.
    assert delta["cancelled"] == hung_up, (delta, hung_up)
    assert delta["length"] == outcomes["done"]
    assert transport_counts(server, "grpc").get("cancelled", 0) == 0
    return delta, requests


def test_256_streams_with_random_hang_ups(busy_server):
    seed = int(os.environ.get("CATSERVE_LOAD_SEED", "26"))
    for round_ in range(2):  # twice: a daemon that held anything back would show it the 2nd time
        before = transport_counts(busy_server)
        results, wall = run_load(busy_server, seed + round_,
                                 [f"127.0.0.{k}" for k in range(2, 6)])
        delta, requests = check_after_load(busy_server, before, results)
        print(f"round {round_}: {CLIENTS} clients, {requests} streams in {wall:.2f} s; "
              f"{delta['cancelled']:.0f} hung up on and cancelled, {delta['length']:.0f} "
              "finished")
    # Still serving.
    done = asyncio.run(sse_client.post_stream(
        "127.0.0.1", busy_server.openai_port,
        {"prompt": "Still there?", "max_tokens": 4, "stream": True}))
    assert done[-1] == "[DONE]"


# Behind a gateway or load balancer every stream comes from one address.
def test_256_streams_from_one_address(busy_server):
    before = transport_counts(busy_server)
    results, _ = run_load(busy_server, 1026, ["127.0.0.1"])
    check_after_load(busy_server, before, results)
