"""Fixtures of the end-to-end tests: Python stubs generated from proto/ at test time and a real
catserve on loopback ports serving the tiny fixture model."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "common"))
from catserve_daemon import CatserveDaemon as Server  # noqa: E402
from catserve_daemon import compile_stubs  # noqa: E402


@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    """The gRPC stubs, generated from proto/ at test time."""
    return compile_stubs(tmp_path_factory.mktemp("stubs"))


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
