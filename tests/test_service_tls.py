"""TLS and mutual TLS of the service: a client trusting the server's CA routes; a plaintext client, one
that trusts another CA, or one shown an expired server certificate cannot connect; with ``client_ca_file``
set, only clients presenting a currently valid certificate signed by that CA get in (not one of another CA,
an expired one or one not valid yet); a bearer token on top of TLS is still required.

The CAs and certificates are generated for this test session (``cryptography``) and written to a temporary
directory: no key material lives in the repository.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service_harness import ServerHandle, expect_rpc_error, make_bank, make_config, queries_for, running_server
from smcs._proto import router_pb2 as pb
from smcs._proto import router_pb2_grpc as pb_grpc
from smcs.client import Client
from smcs.config import AuthConfig, TLSConfig

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
TOKEN = "tls-query-token-5e1b"
FAIL_TIMEOUT_S = 10.0
"""Deadline of the calls expected to fail: a refused handshake fails fast; the deadline only bounds a hang."""


# ------------------------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Pair:
    """A PEM certificate and its PEM private key (and the paths they were written to)."""

    cert: bytes
    key: bytes
    cert_file: Path
    key_file: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / f"{stem}.crt").write_bytes(cert_pem)
    (directory / f"{stem}.key").write_bytes(key_pem)
    return Pair(cert_pem, key_pem, directory / f"{stem}.crt", directory / f"{stem}.key")


Validity = tuple[datetime.timedelta, datetime.timedelta]
"""When a certificate starts and stops being valid, relative to now."""
CURRENT: Validity = (-datetime.timedelta(minutes=5), datetime.timedelta(days=1))
EXPIRED: Validity = (-datetime.timedelta(days=30), -datetime.timedelta(days=1))
NOT_YET_VALID: Validity = (datetime.timedelta(days=1), datetime.timedelta(days=30))


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: object, validity: Validity = CURRENT
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + validity[0])
        .not_valid_after(now + validity[1])
    )


class CA:
    """A self-signed certificate authority that issues server and client certificates."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.key = _key()
        self.name = _name(name)
        self.cert = (
            _builder(self.name, self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pair = _write(directory, name, self.cert, self.key)

    def issue(self, stem: str, *, server: bool, validity: Validity = CURRENT) -> Pair:
        key = _key()
        builder = (
            _builder(_name(stem), self.name, key.public_key(), validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return _write(self.directory, stem, builder.sign(self.key, hashes.SHA256()), key)


@dataclass(frozen=True)
class PKI:
    ca: CA
    server: Pair
    client: Pair
    other_ca: CA
    other_client: Pair
    expired_server: Pair
    expired_client: Pair
    future_client: Pair


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca = CA(directory, "smcs-test-ca")
    other = CA(directory, "unrelated-ca")
    return PKI(
        ca=ca,
        server=ca.issue("server", server=True),
        client=ca.issue("client", server=False),
        other_ca=other,
        other_client=other.issue("other-client", server=False),
        expired_server=ca.issue("expired-server", server=True, validity=EXPIRED),
        expired_client=ca.issue("expired-client", server=False, validity=EXPIRED),
        future_client=ca.issue("future-client", server=False, validity=NOT_YET_VALID),
    )


# ------------------------------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def tls_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tls") / "bank"
    make_bank(path)
    return path


@pytest.fixture(scope="module")
def query(tls_bank: Path) -> np.ndarray:
    return queries_for(tls_bank, 1)[0]


def _tls(pki: PKI, *, mutual: bool) -> TLSConfig:
    return TLSConfig(
        cert_file=str(pki.server.cert_file),
        key_file=str(pki.server.key_file),
        client_ca_file=str(pki.ca.pair.cert_file) if mutual else None,
    )


@pytest.fixture(scope="module")
def tls_server(tls_bank: Path, pki: PKI) -> Iterator[ServerHandle]:
    with running_server(tls_bank, make_config(tls=_tls(pki, mutual=False))) as handle:
        yield handle


@pytest.fixture(scope="module")
def mtls_server(tls_bank: Path, pki: PKI) -> Iterator[ServerHandle]:
    with running_server(tls_bank, make_config(tls=_tls(pki, mutual=True))) as handle:
        yield handle


def _localhost(handle: ServerHandle) -> str:
    """The target by name, so that the certificate's DNS name is what gRPC checks."""
    return f"localhost:{handle.port}"


def _route(client: Client, query: np.ndarray, **kwargs: object) -> object:
    return client.route(embedding=query, seed=1, **kwargs)


# ------------------------------------------------------------------------------------------ TLS


@pytest.mark.parametrize("by_name", [True, False], ids=["localhost", "127.0.0.1"])
def test_tls_client_trusting_the_ca_routes(tls_server, pki, query, by_name):
    target = _localhost(tls_server) if by_name else tls_server.target  # DNS SAN, then IP SAN
    with Client(target, root_certificates=pki.ca.pair.cert, retries=0) as client:
        decision = _route(client, query)
        assert decision.bank_version == tls_server.running.state.live.bank.version
        assert client.health() == "SERVING"


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server, query):
    with Client(_localhost(tls_server), retries=0) as client:
        expect_rpc_error(lambda: _route(client, query, timeout=FAIL_TIMEOUT_S), UNAVAILABLE)


def test_client_not_trusting_the_servers_ca_is_refused(tls_server, pki, query):
    with Client(_localhost(tls_server), root_certificates=pki.other_ca.pair.cert, retries=0) as client:
        expect_rpc_error(lambda: _route(client, query, timeout=FAIL_TIMEOUT_S), UNAVAILABLE)


def test_client_refuses_an_expired_server_certificate(tls_bank, pki, query):
    """Signed by the trusted CA and naming the host, but past its validity: the handshake fails."""
    tls = TLSConfig(cert_file=str(pki.expired_server.cert_file), key_file=str(pki.expired_server.key_file))
    with running_server(tls_bank, make_config(tls=tls)) as handle:
        # by IP (the certificate's IP SAN): "localhost" also resolves to ::1, where nothing listens, and
        # the error reported is then the last address's, "connection refused", half of the time
        with Client(handle.target, root_certificates=pki.ca.pair.cert, retries=0) as client:
            call = lambda: _route(client, query, timeout=FAIL_TIMEOUT_S)  # noqa: E731
            expect_rpc_error(call, UNAVAILABLE, "certificate has expired")


def test_tls_checks_the_host_name(tls_server, pki, query):
    """A name the certificate does not carry is refused even though the CA is trusted."""
    channel = grpc.secure_channel(
        _localhost(tls_server),
        grpc.ssl_channel_credentials(pki.ca.pair.cert),
        options=[("grpc.ssl_target_name_override", "not-this-server.example")],
    )
    try:
        stub = pb_grpc.RouterServiceStub(channel)
        request = pb.RouteRequest(embedding=pb.Embedding(values=query.tolist()), seed=1)
        expect_rpc_error(lambda: stub.Route(request, timeout=FAIL_TIMEOUT_S), UNAVAILABLE)
    finally:
        channel.close()


# ------------------------------------------------------------------------------------ mutual TLS


def test_mutual_tls_client_with_the_right_certificate_routes(mtls_server, pki, query):
    with Client(
        _localhost(mtls_server),
        root_certificates=pki.ca.pair.cert,
        private_key=pki.client.key,
        certificate_chain=pki.client.cert,
        retries=0,
    ) as client:
        decision = _route(client, query)
        assert decision.bank_version == mtls_server.running.state.live.bank.version


def test_mutual_tls_client_without_a_certificate_is_refused(mtls_server, pki, query):
    with Client(_localhost(mtls_server), root_certificates=pki.ca.pair.cert, retries=0) as client:
        expect_rpc_error(lambda: _route(client, query, timeout=FAIL_TIMEOUT_S), UNAVAILABLE)


def test_mutual_tls_client_with_a_certificate_of_another_ca_is_refused(mtls_server, pki, query):
    with Client(
        _localhost(mtls_server),
        root_certificates=pki.ca.pair.cert,
        private_key=pki.other_client.key,
        certificate_chain=pki.other_client.cert,
        retries=0,
    ) as client:
        expect_rpc_error(lambda: _route(client, query, timeout=FAIL_TIMEOUT_S), UNAVAILABLE)


@pytest.mark.parametrize("which", ["expired_client", "future_client"])
def test_mutual_tls_refuses_a_client_certificate_outside_its_validity(mtls_server, pki, query, which):
    """Signed by the right CA, but expired (or not valid yet): the server refuses the handshake (the client
    only sees the connection close; the reason is in the server's log)."""
    pair: Pair = getattr(pki, which)
    with Client(
        _localhost(mtls_server),
        root_certificates=pki.ca.pair.cert,
        private_key=pair.key,
        certificate_chain=pair.cert,
        retries=0,
    ) as client:
        expect_rpc_error(lambda: _route(client, query, timeout=FAIL_TIMEOUT_S), UNAVAILABLE)


def test_mutual_tls_refuses_a_server_certificate_used_as_a_client_certificate_of_another_ca(mtls_server, pki, query):
    """The unrelated CA's own certificate (self-signed) is no way in either."""
    with Client(
        _localhost(mtls_server),
        root_certificates=pki.ca.pair.cert,
        private_key=pki.other_ca.pair.key,
        certificate_chain=pki.other_ca.pair.cert,
        retries=0,
    ) as client:
        expect_rpc_error(lambda: _route(client, query, timeout=FAIL_TIMEOUT_S), UNAVAILABLE)


# ------------------------------------------------------------------------------------ TLS + tokens


def test_bearer_token_is_still_required_over_tls(tls_bank, pki, query):
    config = make_config(tls=_tls(pki, mutual=True), auth=AuthConfig(query_tokens=[TOKEN]))
    credentials = {
        "root_certificates": pki.ca.pair.cert,
        "private_key": pki.client.key,
        "certificate_chain": pki.client.cert,
        "retries": 0,
    }
    with running_server(tls_bank, config) as handle:
        with Client(_localhost(handle), **credentials) as client:  # type: ignore[arg-type]
            expect_rpc_error(lambda: _route(client, query), grpc.StatusCode.UNAUTHENTICATED)
        with Client(_localhost(handle), token="not-the-token", **credentials) as client:  # type: ignore[arg-type]
            expect_rpc_error(lambda: _route(client, query), grpc.StatusCode.UNAUTHENTICATED)
        with Client(_localhost(handle), token=TOKEN, **credentials) as client:  # type: ignore[arg-type]
            assert _route(client, query).bank_version == handle.running.state.live.bank.version


def test_a_tls_server_with_a_missing_key_file_does_not_start(tls_bank, pki, tmp_path):
    config = make_config(tls=TLSConfig(cert_file=str(pki.server.cert_file), key_file=str(tmp_path / "absent.key")))
    with pytest.raises(OSError):
        with running_server(tls_bank, config):
            pass  # pragma: no cover - the server must not start


def test_a_tls_server_with_an_unusable_certificate_names_the_files(tls_bank, tmp_path):
    (tmp_path / "garbage.crt").write_text("not a certificate\n")
    (tmp_path / "garbage.key").write_text("not a key\n")
    config = make_config(tls=TLSConfig(cert_file=str(tmp_path / "garbage.crt"), key_file=str(tmp_path / "garbage.key")))
    with pytest.raises(OSError, match="garbage.crt"):
        with running_server(tls_bank, config):
            pass  # pragma: no cover - the server must not start
