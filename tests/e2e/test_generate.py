"""catserve through Python grpcio, as a client application would use it."""

import time
import urllib.request

import grpc
import pytest


def _generation(stubs, channel):
    pb2, pb2_grpc = stubs
    return pb2, pb2_grpc.GenerationStub(channel)


def test_generate_streams_pieces_then_finish_and_usage(stubs, channel):
    pb2, stub = _generation(stubs, channel)
    request = pb2.GenerateRequest(
        text="Once upon a time",
        max_tokens=24,
        ignore_eos=True,
        tier="quality",
        sampling=pb2.SamplingParams(temperature=0.0),
    )
    messages = list(stub.Generate(request, timeout=30))
    assert len(messages) >= 1
    ids = [i for m in messages for i in m.token_ids]
    assert len(ids) == 24
    last = messages[-1]
    assert last.finish_reason == "length"
    assert last.usage.generated_tokens == 24
    assert last.usage.chunk_size == 2
    assert last.usage.prompt_tokens > 0
    assert last.usage.kv_bytes > 0
    assert not last.usage.degraded and not last.usage.preempted  # a pool far from full
    assert all(not m.finish_reason for m in messages[:-1])

    # Greedy is deterministic; the same ids come back as a token-id prompt continuation.
    again = list(stub.Generate(request, timeout=30))
    assert [i for m in again for i in m.token_ids] == ids
    assert "".join(m.text for m in again) == "".join(m.text for m in messages)


def test_seeded_sampling_is_reproducible(stubs, channel):
    pb2, stub = _generation(stubs, channel)
    request = pb2.GenerateRequest(
        token_ids=pb2.TokenIds(ids=[5, 17, 42, 99]),
        max_tokens=16,
        ignore_eos=True,
        chunk_size=4,
        logprobs=True,
        sampling=pb2.SamplingParams(temperature=0.8, top_k=50, seed=7),
    )
    first = list(stub.Generate(request, timeout=30))
    second = list(stub.Generate(request, timeout=30))
    ids = [i for m in first for i in m.token_ids]
    assert ids == [i for m in second for i in m.token_ids]
    logprobs = [p for m in first for p in m.logprobs]
    assert len(logprobs) == len(ids) and all(p <= 0 for p in logprobs)


def test_tokenize(stubs, channel):
    pb2, stub = _generation(stubs, channel)
    response = stub.Tokenize(pb2.TokenizeRequest(text="Once upon a time"), timeout=10)
    assert len(response.token_ids) > 0
    assert len(response.pieces) == len(response.token_ids)
    # Tokenized ids generate like the text does.
    by_text = list(
        stub.Generate(pb2.GenerateRequest(text="Once upon a time", max_tokens=5,
                                          sampling=pb2.SamplingParams(temperature=0)), timeout=30))
    by_ids = list(
        stub.Generate(pb2.GenerateRequest(token_ids=pb2.TokenIds(ids=response.token_ids),
                                          max_tokens=5, sampling=pb2.SamplingParams(temperature=0)),
                      timeout=30))
    assert [i for m in by_text for i in m.token_ids] == [i for m in by_ids for i in m.token_ids]


def test_model_info(stubs, channel):
    pb2, stub = _generation(stubs, channel)
    info = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=10)
    assert info.model == "tiny"
    assert list(info.chunk_sizes) == [1, 2, 4, 8, 16]
    assert info.default_chunk_size == 8
    assert dict(info.tiers) == {"quality": 2, "balanced": 8, "throughput": 16}
    assert dict(info.tier_coarsest_chunk_sizes) == {"quality": 2, "balanced": 16,
                                                    "throughput": 16}
    assert info.pressure_policy == "degrade"
    assert info.limits.max_context == 128
    assert info.vocab_size == 384
    assert info.kv_bytes_per_entry == 512  # 2 layers x K,V x 4 kv heads x 16 dims x 2 (bf16 KV)


def _raw_unary(channel, method, request_bytes):
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return call(request_bytes, timeout=10)


def test_health(channel):
    # grpc.health.v1.HealthCheckRequest{service}: field 1, length-delimited. Response
    # {status}: field 1 varint; 1 = SERVING.
    for service in (b"", b"catserve.v1.Generation"):
        request = b"\x0a" + bytes([len(service)]) + service if service else b""
        assert _raw_unary(channel, "/grpc.health.v1.Health/Check", request) == b"\x08\x01"
    with pytest.raises(grpc.RpcError) as error:
        _raw_unary(channel, "/grpc.health.v1.Health/Check", b"\x0a\x03foo")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_service(channel):
    # ServerReflectionRequest{list_services = 7: ""}.
    call = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=None, response_deserializer=None)
    responses = list(call(iter([b"\x3a\x00"]), timeout=10))
    assert len(responses) == 1
    assert b"catserve.v1.Generation" in responses[0]
    assert b"grpc.health.v1.Health" in responses[0]


@pytest.mark.parametrize(
    "fields,fragment",
    [
        (dict(text="", max_tokens=4), "prompt is empty"),
        (dict(text="hi", max_tokens=0), "max_tokens"),
        (dict(text="hi", max_tokens=4, chunk_size=3), "served chunk sizes: 1, 2, 4, 8, 16"),
        (dict(text="hi", max_tokens=4, tier="nope"), "unknown tier 'nope'"),
        (dict(token_ids=dict(ids=[1000]), max_tokens=4), "1000"),
    ],
)
def test_bad_input_is_invalid_argument(stubs, channel, fields, fragment):
    pb2, stub = _generation(stubs, channel)
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Generate(pb2.GenerateRequest(**fields), timeout=10))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in error.value.details()


def test_metrics_endpoint(server, stubs, channel):
    pb2, stub = _generation(stubs, channel)
    list(stub.Generate(pb2.GenerateRequest(text="hello", max_tokens=3), timeout=30))
    deadline = time.time() + 5
    while True:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics").read().decode()
        if "\ncatserve_kv_pages_used 0\n" in body or time.time() > deadline:
            break
        time.sleep(0.05)
    assert "\ncatserve_kv_pages_used 0\n" in body
    assert 'catserve_build_info{' in body
    ready = urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/readyz")
    assert ready.status == 200
