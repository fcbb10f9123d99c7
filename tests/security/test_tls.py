"""TLS and mTLS on the gRPC port, and certificate rotation without a restart."""

import shutil
import time

import grpc
import pytest

from conftest import CatserveDaemon, error_of


def model_info(stubs, channel):
    pb2, pb2_grpc = stubs
    return pb2_grpc.GenerationStub(channel).GetModelInfo(pb2.GetModelInfoRequest(), timeout=5)


def tls_channel(server, pki, ca, client=None):
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.read(f"{ca}.crt"),
        private_key=pki.read(f"{client}.key") if client else None,
        certificate_chain=pki.read(f"{client}.crt") if client else None)
    return grpc.secure_channel(server.address, creds)


def code_of(call):
    return error_of(call)[0]


@pytest.fixture(scope="module")
def tls_server(pki):
    s = CatserveDaemon(f"--tls_cert={pki.path('server1.crt')}",
                       f"--tls_key={pki.path('server1.key')}")
    yield s
    assert s.stop() == 0, s.log


@pytest.fixture(scope="module")
def mtls_server(pki):
    s = CatserveDaemon(f"--tls_cert={pki.path('server1.crt')}",
                       f"--tls_key={pki.path('server1.key')}",
                       f"--tls_client_ca={pki.path('ca1.crt')}")
    yield s
    assert s.stop() == 0, s.log


def test_tls_client_is_served(tls_server, pki, stubs):
    assert "security: TLS," in tls_server.log
    with tls_channel(tls_server, pki, "ca1") as ch:
        assert model_info(stubs, ch).model == "tiny"


def test_plaintext_client_is_refused(tls_server, stubs):
    with grpc.insecure_channel(tls_server.address) as ch:
        assert code_of(lambda: model_info(stubs, ch)) == grpc.StatusCode.UNAVAILABLE


def test_client_trusting_another_ca_is_refused(tls_server, pki, stubs):
    with tls_channel(tls_server, pki, "ca2") as ch:
        assert code_of(lambda: model_info(stubs, ch)) == grpc.StatusCode.UNAVAILABLE


def test_mtls_client_with_a_certificate_of_the_ca_is_served(mtls_server, pki, stubs):
    assert "mTLS (client certificates required)" in mtls_server.log
    with tls_channel(mtls_server, pki, "ca1", client="client1") as ch:
        assert model_info(stubs, ch).model == "tiny"


def test_mtls_client_without_a_certificate_is_refused(mtls_server, pki, stubs):
    with tls_channel(mtls_server, pki, "ca1") as ch:
        assert code_of(lambda: model_info(stubs, ch)) == grpc.StatusCode.UNAVAILABLE


def test_mtls_client_with_a_certificate_of_another_ca_is_refused(mtls_server, pki, stubs):
    with tls_channel(mtls_server, pki, "ca1", client="client2") as ch:
        assert code_of(lambda: model_info(stubs, ch)) == grpc.StatusCode.UNAVAILABLE


def test_rotated_certificate_is_served_without_restart(pki, stubs, tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pki.path("server1.crt"), cert)
    shutil.copy(pki.path("server1.key"), key)
    s = CatserveDaemon(f"--tls_cert={cert}", f"--tls_key={key}", "--tls_reload_seconds=1")
    try:
        with tls_channel(s, pki, "ca2") as ch:
            assert code_of(lambda: model_info(stubs, ch)) == grpc.StatusCode.UNAVAILABLE
        # What cert-manager does to a mounted Secret: new files swapped in whole.
        for src, dst in (("server2.key", key), ("server2.crt", cert)):
            tmp = dst.with_suffix(".new")
            shutil.copy(pki.path(src), tmp)
            tmp.rename(dst)
        give_up = time.monotonic() + 15
        while True:
            with tls_channel(s, pki, "ca2") as ch:
                code = code_of(lambda: model_info(stubs, ch))
            if code == grpc.StatusCode.OK or time.monotonic() > give_up:
                break
            time.sleep(0.5)
        assert code == grpc.StatusCode.OK
        with tls_channel(s, pki, "ca1") as ch:
            assert code_of(lambda: model_info(stubs, ch)) == grpc.StatusCode.UNAVAILABLE
    finally:
        assert s.stop() == 0, s.log


@pytest.mark.parametrize("flags,message", [
    (["--tls_cert=/nonexistent.crt", "--tls_key=/nonexistent.key"], "--tls_cert=/nonexistent.crt"),
    (["--tls_key=KEY"], "set both --tls_cert and --tls_key"),
    (["--tls_client_ca=CA"], "--tls_client_ca needs --tls_cert and --tls_key"),
])
def test_bad_tls_flags_exit_1_naming_the_flag(flags, message, pki):
    flags = [f.replace("KEY", str(pki.path("server1.key"))).replace("CA", str(pki.path("ca1.crt")))
             for f in flags]
    with pytest.raises(RuntimeError) as failure:
        CatserveDaemon(*flags)
    assert "exit code 1" in str(failure.value)
    assert message in str(failure.value)


def test_a_key_file_that_is_not_pem_is_refused(pki, tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    with pytest.raises(RuntimeError) as failure:
        CatserveDaemon(f"--tls_cert={pki.path('server1.crt')}", f"--tls_key={bad}")
    assert "exit code 1" in str(failure.value)
    assert "holds no PEM PRIVATE KEY block" in str(failure.value)
