"""Fixtures of the security tests: stubs, a certificate authority made with openssl at test time,
and a spawned catserve (tests/common/catserve_daemon.py)."""

import pathlib
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "common"))
from catserve_daemon import CatserveDaemon  # noqa: E402,F401
from catserve_daemon import compile_stubs  # noqa: E402


@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    return compile_stubs(tmp_path_factory.mktemp("stubs"))


def error_of(call):
    """(status code, details) of what `call()` raised; (OK, "") when it returned."""
    import grpc

    try:
        call()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def _openssl(*args, cwd):
    if shutil.which("openssl") is None:
        pytest.fail("openssl not found; run deploy/install-deps.sh", pytrace=False)
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    """Certificate authorities and certificates in one directory, made with openssl."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)

    def path(self, name):
        return self.dir / name

    def read(self, name):
        return self.path(name).read_bytes()

    def ca(self, name):
        """A self-signed CA: NAME.key, NAME.crt."""
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.crt", cwd=self.dir)

    def cert(self, name, ca, server):
        """NAME.key, NAME.crt signed by CA; a server certificate names 127.0.0.1 and localhost."""
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 cwd=self.dir)
        ext = self.path(f"{name}.ext")
        if server:
            ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                           "extendedKeyUsage=serverAuth\n")
        else:
            ext.write_text("extendedKeyUsage=clientAuth\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-days", "2", "-extfile", ext.name, "-out", f"{name}.crt",
                 cwd=self.dir)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """ca1 and ca2; server1 (by ca1) and server2 (by ca2); client1 (by ca1) and client2 (by ca2)."""
    p = Pki(tmp_path_factory.mktemp("pki"))
    for ca in ("ca1", "ca2"):
        p.ca(ca)
    p.cert("server1", "ca1", server=True)
    p.cert("server2", "ca2", server=True)
    p.cert("client1", "ca1", server=False)
    p.cert("client2", "ca2", server=False)
    return p
