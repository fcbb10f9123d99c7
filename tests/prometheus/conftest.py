"""Fixtures of the Prometheus integration tests: a catserve daemon and a real Prometheus server,
both on loopback ephemeral ports, both killed and their temporary directories deleted whatever
the outcome of the test.

Environment: CATSERVE_BIN (the daemon; CTest passes $<TARGET_FILE:catserve>), PROMETHEUS and
PROMTOOL (default: /usr/bin/prometheus, /usr/bin/promtool, then $PATH).
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "common"))
from catserve_daemon import CatserveDaemon, compile_stubs, stop_process  # noqa: E402

INSTALL_HINT = ("install Debian's 'prometheus' package (it provides prometheus and promtool): "
                "run deploy/install-deps.sh")


# Turn SIGTERM into an exception so that the fixtures' finalizers still stop the processes and
# delete the temporary directories. (CTest's timeout kills the whole process tree.)
def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _terminate)


def find_tool(env, name):
    """$env, else /usr/bin/<name>, else <name> on $PATH; fails naming deploy/install-deps.sh."""
    path = os.environ.get(env) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK)
                                   else shutil.which(name))
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"{name} not found (set ${env} or {INSTALL_HINT})", pytrace=False)
    return path


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


class Catserve(CatserveDaemon):
    """The daemon (tests/common/catserve_daemon.py) plus a scrape of its /metrics."""

    def scrape(self):
        status, body = http_get(self.metrics_url)
        assert status == 200
        return body


class Prometheus:
    """/usr/bin/prometheus with its own config (scrape_interval 1s, one job `catserve` scraping
    `target`), its own TSDB directory, and its web/API listener on 127.0.0.1 only."""

    def __init__(self, binary, workdir, target):
        self.workdir = pathlib.Path(workdir)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: catserve\n"
            "    metrics_path: /metrics\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n")
        self.log_path = self.workdir / "prometheus.log"
        self.proc = None
        # Prometheus cannot report a port it picked itself: take a free one, and try again
        # should another process grab it in between.
        for _ in range(5):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
            with open(self.log_path, "w") as log:
                self.proc = subprocess.Popen(
                    [binary, f"--config.file={config}",
                     f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}",
                     "--storage.tsdb.retention.time=1h", "--log.level=info"],
                    cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            self.url = f"http://127.0.0.1:{self.port}"
            if self._await_ready(30):
                return
            if self.proc.poll() is not None and "address already in use" in self.log():
                continue
            break
        self.stop()
        raise RuntimeError(f"prometheus did not become ready:\n{self.log()}")

    def _await_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if http_get(f"{self.url}/-/ready", timeout=2)[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def log(self):
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def query(self, promql, at=None):
        """Instant query through /api/v1/query; returns the result vector as
        [(labels dict, float value), ...]."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        status, body = http_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        assert answer["data"]["resultType"] == "vector", answer
        return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]

    def stop(self):
        return stop_process(self.proc, 15) if self.proc is not None else None


@pytest.fixture(scope="module")
def stubs():
    """proto/catserve/v1/*.proto compiled into a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="catserve-stubs-") as out:
        yield compile_stubs(out)
        sys.path.remove(out)


@pytest.fixture(scope="module")
def catserve():
    server = Catserve()
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, f"catserve exited with {code}:\n{server.log}"


@pytest.fixture(scope="module")
def prometheus(catserve):
    binary = find_tool("PROMETHEUS", "prometheus")
    with tempfile.TemporaryDirectory(prefix="catserve-prometheus-") as workdir:
        server = Prometheus(binary, workdir, f"127.0.0.1:{catserve.http_port}")
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def channel(catserve):
    import grpc

    with grpc.insecure_channel(catserve.address) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch
