"""AMQP over TLS: an ``amqps://`` URL gets a context that verifies the broker's certificate and
host name, against a configured CA file or the system's; a file that cannot be read is a config
error naming its setting. (No TLS broker needed: the context is what the connection uses.)"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from cloudcore.config import TransportSettings
from cloudcore.errors import ConfigError
from cloudcore.transport.amqp._connection import amqp_url, tls_context


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "ca.pem", tmp_path / "ca.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=broker.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_a_plain_url_has_no_tls() -> None:
    assert tls_context(TransportSettings(amqp_url="amqp://broker:5672/")) is None


def test_an_amqps_url_verifies_the_broker_against_the_system_cas() -> None:
    context = tls_context(TransportSettings(amqp_url="amqps://broker:5671/"))
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == len(ssl.create_default_context().get_ca_certs())


def test_an_amqps_url_trusts_the_configured_ca_file(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    settings = TransportSettings(
        amqp_url="amqps://broker.test:5671/vh",
        amqp_ca_file=str(cert),
        amqp_cert_file=str(cert),
        amqp_key_file=str(key),
        amqp_username="svc",
    )
    context = tls_context(settings)
    assert context is not None and context.verify_mode is ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "broker.test"),),)]
    assert amqp_url(settings) == "amqps://svc@broker.test:5671/vh"


def test_a_ca_file_that_cannot_be_read_is_a_config_error_naming_it(tmp_path: Path) -> None:
    settings = TransportSettings(amqp_url="amqps://b/", amqp_ca_file=str(tmp_path / "none.pem"))
    with pytest.raises(ConfigError, match=r"transport\.amqp_ca_file"):
        tls_context(settings)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"amqp_url": "http://broker/"}, "amqp_url"),
        ({"amqp_url": "amqp://broker/", "amqp_ca_file": "/ca.pem"}, "amqps://"),
        ({"amqp_url": "amqps://broker/", "amqp_key_file": "/k.pem"}, "amqp_cert_file"),
    ],
)
def test_tls_settings_that_cannot_work_are_refused(fields: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        TransportSettings(**fields)  # type: ignore[arg-type]
