"""Fixtures of the OpenAI API tests: a real catserve (tests/common/catserve_daemon.py) serving the
tiny fixture model with its OpenAI-compatible API on a loopback port, the gRPC stubs, and reads of
its /metrics."""

import pathlib
import re
import signal
import sys
import time
import urllib.request

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "common"))
sys.path.insert(0, str(HERE))
from catserve_daemon import CatserveDaemon  # noqa: E402
from catserve_daemon import compile_stubs  # noqa: E402


# SIGTERM (CTest's timeout) as an exception, so that the fixtures still stop their daemons.
def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _terminate)


def scrape(server):
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        return response.read().decode()


def metric(text, name, **labels):
    """The sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for label_text, value in re.findall(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', label_text or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def wait_for_metric(server, name, want, timeout=5.0, **labels):
    """Polls /metrics until `name` (summed over `labels`) equals `want`; returns the last text."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(server)
        if metric(text, name, **labels) == want or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def transport_counts(server, transport="openai"):
    """catserve_requests_by_transport_total by outcome, for one transport."""
    text = scrape(server)
    out = {}
    for labels, value in re.findall(r"^catserve_requests_by_transport_total{([^}]*)} (\S+)$",
                                    text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if have.get("transport") == transport:
            out[have["outcome"]] = out.get(have["outcome"], 0) + float(value)
    return out


def stop(server):
    code = server.stop()
    assert code == 0, f"catserve exited with {code}:\n{server.log}"


@pytest.fixture(scope="module")
def server():
    s = CatserveDaemon()
    yield s
    stop(s)


@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    return compile_stubs(tmp_path_factory.mktemp("stubs"))
