"""Bearer tokens, open health checks, and reflection on or off."""

import time

import grpc
import pytest

from conftest import CatserveDaemon, error_of


def model_info(stubs, channel, token=None):
    pb2, pb2_grpc = stubs
    metadata = [("authorization", f"Bearer {token}")] if token is not None else None
    return pb2_grpc.GenerationStub(channel).GetModelInfo(pb2.GetModelInfoRequest(), timeout=5,
                                                         metadata=metadata)



def raw_unary(channel, method, request=b""):
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)(
        request, timeout=5)


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text("# the platform team's tokens\nalpha-0123456789\n\n  beta-9876543210  \n")
    return path


@pytest.fixture(scope="module")
def server(tokens_file):
    s = CatserveDaemon(f"--auth_tokens_file={tokens_file}")
    yield s
    assert s.stop() == 0, s.log


def test_every_listed_token_is_accepted(server, stubs):
    assert "bearer tokens required" in server.log
    with grpc.insecure_channel(server.address) as ch:
        assert model_info(stubs, ch, "alpha-0123456789").model == "tiny"
        assert model_info(stubs, ch, "beta-9876543210").model == "tiny"


@pytest.mark.parametrize("token,detail", [
    (None, "authorization: Bearer <token>"),
    ("alpha-012345678", "not valid"),
    ("alpha-01234567890", "not valid"),
    ("# the platform team's tokens", "not valid"),
    ("", "not valid"),
])
def test_calls_without_a_valid_token_are_unauthenticated(server, stubs, token, detail):
    with grpc.insecure_channel(server.address) as ch:
        code, message = error_of(lambda: model_info(stubs, ch, token))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert detail in message


def test_generate_and_tokenize_need_the_token_too(server, stubs):
    pb2, pb2_grpc = stubs
    with grpc.insecure_channel(server.address) as ch:
        stub = pb2_grpc.GenerationStub(ch)
        code, _ = error_of(lambda: list(stub.Generate(pb2.GenerateRequest(text="hi", max_tokens=2),
                                                      timeout=5)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, _ = error_of(lambda: stub.Tokenize(pb2.TokenizeRequest(text="hi"), timeout=5))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        auth = [("authorization", "Bearer alpha-0123456789")]
        pieces = list(stub.Generate(pb2.GenerateRequest(text="hi", max_tokens=2), timeout=10,
                                    metadata=auth))
        assert pieces[-1].finish_reason in ("length", "stop")


def test_health_needs_no_token(server):
    with grpc.insecure_channel(server.address) as ch:
        assert raw_unary(ch, "/grpc.health.v1.Health/Check") == b"\x08\x01"  # SERVING


def test_tokens_file_is_reloaded_when_it_changes(stubs, tmp_path):
    path = tmp_path / "tokens"
    path.write_text("old-token-aaaa\n")
    s = CatserveDaemon(f"--auth_tokens_file={path}")
    try:
        with grpc.insecure_channel(s.address) as ch:
            assert model_info(stubs, ch, "old-token-aaaa").model == "tiny"
            tmp = tmp_path / "tokens.new"
            tmp.write_text("new-token-bbbbbb\n")
            tmp.rename(path)
            give_up = time.monotonic() + 10
            while error_of(lambda: model_info(stubs, ch, "new-token-bbbbbb"))[0] != grpc.StatusCode.OK:
                assert time.monotonic() < give_up, "new token never accepted"
                time.sleep(0.2)
            assert error_of(lambda: model_info(stubs, ch, "old-token-aaaa"))[0] == \
                grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert s.stop() == 0, s.log


def test_empty_tokens_file_is_refused_at_start(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("# nothing yet\n")
    with pytest.raises(RuntimeError) as failure:
        CatserveDaemon(f"--auth_tokens_file={path}")
    assert "exit code 1" in str(failure.value)
    assert "holds no token" in str(failure.value)


# ServerReflectionRequest{list_services = ""}: field 7, length-delimited, empty.
LIST_SERVICES = b"\x3a\x00"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def reflect(channel):
    call = channel.stream_stream(REFLECTION, request_serializer=None, response_deserializer=None)
    return b"".join(call(iter([LIST_SERVICES]), timeout=5))


def test_reflection_lists_the_services_when_on():
    s = CatserveDaemon()
    try:
        assert "reflection on" in s.log
        with grpc.insecure_channel(s.address) as ch:
            assert b"catserve.v1.Generation" in reflect(ch)
    finally:
        assert s.stop() == 0, s.log


def test_reflection_off_is_unimplemented():
    s = CatserveDaemon("--reflection=false")
    try:
        assert "reflection off" in s.log
        with grpc.insecure_channel(s.address) as ch:
            code, _ = error_of(lambda: reflect(ch))
        assert code == grpc.StatusCode.UNIMPLEMENTED
    finally:
        assert s.stop() == 0, s.log
