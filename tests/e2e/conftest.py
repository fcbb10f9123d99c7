"""Fixtures of the end-to-end tests: Python stubs generated from proto/ at test time and a real
catserve on loopback ports serving the tiny fixture model."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    """Compiles proto/catserve/v1/*.proto with grpc_tools.protoc and imports the modules."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    proto_root = REPO / "proto"
    protos = sorted(str(p) for p in (proto_root / "catserve" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{proto_root}", f"--python_out={out}", f"--grpc_python_out={out}"]
    assert protoc.main(args + protos) == 0, "grpc_tools.protoc failed"
    sys.path.insert(0, str(out))
    from catserve.v1 import generation_pb2, generation_pb2_grpc

    return generation_pb2, generation_pb2_grpc


class Server:
    """A running catserve; its stderr is collected in `log`."""

    def __init__(self, *flags):
        binary = os.environ.get("CATSERVE_BIN", str(REPO / "build" / "server" / "catserve"))
        cmd = [
            binary,
            f"--model_dir={REPO / 'tests' / 'fixtures' / 'tiny'}",
            "--listen=127.0.0.1:0",
            "--http_listen=127.0.0.1:0",
            "--threads=1",
            "--kv_pool_mb=16",
            *flags,
        ]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.log = ""
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(60) or "catserve: ready" not in self.log:
            self.proc.kill()
            raise RuntimeError(f"catserve did not start:\n{self.log}")
        self.grpc_port = int(re.search(r"catserve: listening on \S+:(\d+)", self.log).group(1))
        self.http_port = int(re.search(r"catserve: metrics on http://\S+:(\d+)/", self.log).group(1))
        self.address = f"127.0.0.1:{self.grpc_port}"

    def _read(self):
        for line in self.proc.stderr:
            self.log += line
            if line.startswith("catserve: ready"):
                self._ready.set()
        self._ready.set()

    def stop(self, timeout=30):
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    assert s.stop() == 0, s.log


@pytest.fixture
def channel(server):
    import grpc

    with grpc.insecure_channel(server.address) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch
