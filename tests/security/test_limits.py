"""Limits checked before work: a huge prompt is refused without being tokenized, and what a
client sent is echoed only as a short excerpt."""

import re
import time
import urllib.request

import grpc
import pytest

from conftest import CatserveDaemon, error_of


@pytest.fixture(scope="module")
def server():
    s = CatserveDaemon()
    yield s
    assert s.stop() == 0, s.log



def resident_bytes(server):
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    return float(re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M).group(1))


def test_huge_prompt_is_refused_before_tokenizing(server, stubs):
    pb2, pb2_grpc = stubs
    before = resident_bytes(server)
    with grpc.insecure_channel(server.address) as ch:
        stub = pb2_grpc.GenerationStub(ch)
        request = pb2.GenerateRequest(text="the cat sat on the mat. " * 160000, max_tokens=4)
        assert len(request.text) > 3_800_000
        start = time.monotonic()
        for _ in range(8):
            code, message = error_of(lambda: list(stub.Generate(request, timeout=30)))
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert "--max_prompt_bytes" in message
        # Refused from its size alone: no tokenizing (which took ~1.3 s for one such prompt).
        assert time.monotonic() - start < 5
        code, message = error_of(lambda: stub.Tokenize(pb2.TokenizeRequest(text=request.text),
                                                       timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    # Each copy of the message is ~4 MB; tokenizing one took ~920 MB.
    assert resident_bytes(server) - before < 200e6


def test_long_unknown_tier_is_echoed_as_an_excerpt(server, stubs):
    pb2, pb2_grpc = stubs
    with grpc.insecure_channel(server.address) as ch:
        stub = pb2_grpc.GenerationStub(ch)
        request = pb2.GenerateRequest(text="hi", max_tokens=2, tier="x" * 100_000)
        code, message = error_of(lambda: list(stub.Generate(request, timeout=10)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown tier" in message and "(100000 bytes)" in message
    assert len(message) < 300
