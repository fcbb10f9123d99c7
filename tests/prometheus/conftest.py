"""Fixtures of the Prometheus integration tests: a catserve daemon and a real Prometheus server,
both on loopback ephemeral ports, both killed and their temporary directories deleted whatever
the outcome of the test.

Environment: CATSERVE_BIN (the daemon; CTest passes $<TARGET_FILE:catserve>), PROMETHEUS and
PROMTOOL (default: /usr/bin/prometheus, /usr/bin/promtool, then $PATH).
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "fixtures" / "tiny"
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


def _stop(proc, timeout=15):
    """SIGTERM, then SIGKILL after `timeout` s; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class Catserve:
    """The catserve daemon on the tiny fixture model, gRPC and HTTP on 127.0.0.1 port 0; the
    bound ports are read from its startup lines. Its stderr is collected in `log`."""

    def __init__(self, *flags):
        binary = os.environ.get("CATSERVE_BIN", str(REPO / "build" / "server" / "catserve"))
        if not os.access(binary, os.X_OK):
            pytest.fail(f"catserve binary {binary} not found; build the catserve target "
                        "(CTest passes it in $CATSERVE_BIN)", pytrace=False)
        cmd = [binary, f"--model_dir={TINY}", "--listen=127.0.0.1:0",
               "--http_listen=127.0.0.1:0", "--threads=1", "--kv_pool_mb=16", *flags]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.log = ""
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(60) or "catserve: ready" not in self.log:
            code = self.stop()
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            raise RuntimeError(f"catserve did not start ({how}): {' '.join(cmd)}\n{self.log}")
        self.grpc_port = int(re.search(r"catserve: listening on \S+:(\d+)", self.log).group(1))
        self.http_port = int(re.search(r"catserve: metrics on http://\S+:(\d+)/", self.log).group(1))
        self.address = f"127.0.0.1:{self.grpc_port}"
        self.metrics_url = f"http://127.0.0.1:{self.http_port}/metrics"

    def _read(self):
        for line in self.proc.stderr:
            self.log += line
            if line.startswith("catserve: ready"):
                self._ready.set()
        self._ready.set()

    def scrape(self):
        status, body = http_get(self.metrics_url)
        assert status == 200
        return body

    def stop(self):
        return _stop(self.proc, 30)


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
        return _stop(self.proc, 15) if self.proc is not None else None


@pytest.fixture(scope="module")
def stubs():
    """proto/catserve/v1/*.proto compiled with grpc_tools.protoc into a temporary directory."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory(prefix="catserve-stubs-") as out:
        proto_root = REPO / "proto"
        protos = sorted(str(p) for p in (proto_root / "catserve" / "v1").glob("*.proto"))
        args = ["protoc", f"-I{proto_root}", f"--python_out={out}", f"--grpc_python_out={out}"]
        assert protoc.main(args + protos) == 0, "grpc_tools.protoc failed"
        sys.path.insert(0, out)
        try:
            from catserve.v1 import generation_pb2, generation_pb2_grpc
        finally:
            sys.path.remove(out)
        yield generation_pb2, generation_pb2_grpc


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
