"""A real catserve daemon for the Python tests (tests/e2e, tests/prometheus), and the gRPC stubs
to talk to it.

The daemon serves the tiny fixture model on 127.0.0.1 port 0 (gRPC and HTTP); the bound ports
are read from its startup lines. The binary is $CATSERVE_BIN (CTest passes
$<TARGET_FILE:catserve>), else build/server/catserve.
"""

import os
import pathlib
import re
import signal
import subprocess
import sys
import threading

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "fixtures" / "tiny"


def stop_process(proc, timeout):
    """SIGTERM, then SIGKILL after `timeout` s; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def compile_stubs(out_dir):
    """proto/catserve/v1/*.proto compiled with grpc_tools.protoc into out_dir, imported:
    returns (generation_pb2, generation_pb2_grpc). out_dir stays on sys.path."""
    from grpc_tools import protoc

    proto_root = REPO / "proto"
    protos = sorted(str(p) for p in (proto_root / "catserve" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{proto_root}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    assert protoc.main(args + protos) == 0, "grpc_tools.protoc failed"
    sys.path.insert(0, str(out_dir))
    from catserve.v1 import generation_pb2, generation_pb2_grpc

    return generation_pb2, generation_pb2_grpc


class CatserveDaemon:
    """A running catserve; its stderr is collected in `log`."""

    def __init__(self, *flags):
        binary = os.environ.get("CATSERVE_BIN", str(REPO / "build" / "server" / "catserve"))
        if not os.access(binary, os.X_OK):
            pytest.fail(f"catserve binary {binary} not found; build the catserve target "
                        "(CTest passes it in $CATSERVE_BIN)", pytrace=False)
        cmd = [binary, f"--model_dir={TINY}", "--listen=127.0.0.1:0",
               "--http_listen=127.0.0.1:0", "--openai_listen=127.0.0.1:0", "--threads=1",
               "--kv_pool_mb=16", *flags]
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
        openai = re.search(r"catserve: openai api on (https?)://\S+:(\d+)/v1", self.log)
        # The OpenAI API's base URL, as the openai client takes it; None with --openai_listen=.
        self.openai_port = int(openai.group(2)) if openai else None
        self.openai_url = f"{openai.group(1)}://127.0.0.1:{self.openai_port}/v1" if openai else None
        self.address = f"127.0.0.1:{self.grpc_port}"
        self.metrics_url = f"http://127.0.0.1:{self.http_port}/metrics"

    def _read(self):
        for line in self.proc.stderr:
            self.log += line
            if line.startswith("catserve: ready"):
                self._ready.set()
        self._ready.set()

    def stop(self, timeout=30):
        """SIGTERM (the daemon drains), then the exit code."""
        return stop_process(self.proc, timeout)
