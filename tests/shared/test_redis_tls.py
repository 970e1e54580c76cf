"""A managed Redis over TLS with a password (``rediss://``, as the production compose file
allows): the services' Redis clients and a real Celery worker talk to it, and nobody gets in
without the password or in plain text."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.directory.config import Settings
from shared.celery_app import make_celery
from tests.support.processes import celery_worker, wait_for

PASSWORD = "tls-test-password-0123456789abcdef"


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_redis():
    folder = Path(tempfile.mkdtemp(prefix="fama-redis-tls-"))
    cert, key = self_signed(folder)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                             "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"

    def answers() -> bool:
        try:
            return redis.Redis.from_url(url, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    wait_for(answers, timeout=20, what="redis-server with TLS (is redis-server built with TLS?)")
    yield {"url": url, "port": port}
    proc.terminate()
    proc.wait(timeout=10)


def test_a_real_worker_and_the_services_clients_use_redis_over_tls(tls_redis):
    settings = Settings(redis_url=tls_redis["url"], redis_key_prefix="fama-tls-test:")
    app = make_celery("directory", settings)
    worker = celery_worker("directory", env={"REDIS_URL": tls_redis["url"], "REDIS_KEY_PREFIX": "fama-tls-test:"})
    worker.start(timeout=120)
    try:
        replies = wait_for(lambda: app.control.ping(timeout=2), timeout=60, what="the worker to answer over TLS")
        assert any(name.startswith(worker.name) for reply in replies for name in reply)
    finally:
        worker.stop()


def test_no_password_or_plain_text_gets_in(tls_redis):
    without_password = tls_redis["url"].replace(f":{PASSWORD}@", "")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(without_password, socket_timeout=2).ping()
    with pytest.raises(redis.RedisError):
        redis.Redis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{tls_redis['port']}/0", socket_timeout=2).ping()
