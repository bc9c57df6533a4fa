"""Email over TLS: STARTTLS and implicit TLS against a real local SMTP server."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import Harness
from tests.test_notify_sinks import Inbox, free_port, poll_epochs


@pytest.fixture(name="cert")
def _cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (our own private CA, in effect)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


@pytest.fixture(name="starttls_server")
def _starttls_server(cert: tuple[Path, Path]) -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_context(cert),
        require_starttls=True,
    )
    controller.start()
    yield inbox, port
    controller.stop()


def email_sink(port: int, security: str, ca_file: Path | None) -> str:
    ca = f'ca_file = "{ca_file}"\n' if ca_file else ""
    return (
        "[[sinks]]\nsend_first_listing = true\n"
        f'kind = "email"\nname = "mail"\nhost = "localhost"\nport = {port}\n'
        f'security = "{security}"\nfrom = "news@aggregator.test"\nto = ["desk@example.test"]\n'
        f"{ca}"
    )


def test_starttls_delivers_when_the_server_certificate_is_trusted(
    harness: Harness, starttls_server: tuple[Inbox, int], cert: tuple[Path, Path]
) -> None:
    """With ca_file naming the server's CA, mail goes out over STARTTLS (the server requires it)."""
    inbox, port = starttls_server
    harness.add("world", "/feed.xml")
    harness.extra = email_sink(port, "starttls", cert[0])
    poll_epochs(harness, 0)
    assert len(inbox.messages) == 3
    [attempts] = harness.rows(
        "SELECT count(*) AS n FROM delivery_attempts WHERE status = 'delivered'"
    )
    assert attempts["n"] == 3


def test_untrusted_certificate_is_retried_not_lost(
    harness: Harness, starttls_server: tuple[Inbox, int]
) -> None:
    """Without the CA, TLS verification fails: nothing is sent and the events stay pending."""
    inbox, port = starttls_server
    harness.add("world", "/feed.xml")
    harness.extra = email_sink(port, "starttls", None)
    poll_epochs(harness, 0)
    assert inbox.messages == []
    pending = harness.rows("SELECT status, last_error FROM deliveries")
    assert pending and all(r["status"] == "pending" for r in pending)
    assert "CERTIFICATE_VERIFY_FAILED" in pending[0]["last_error"]


def test_implicit_tls_delivers(harness: Harness, cert: tuple[Path, Path]) -> None:
    """security = "ssl" speaks TLS from the first byte (port 465 style)."""
    inbox, port = Inbox(), free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, ssl_context=server_context(cert)
    )
    controller.start()
    try:
        harness.add("world", "/feed.xml")
        harness.extra = email_sink(port, "ssl", cert[0])
        poll_epochs(harness, 0)
    finally:
        controller.stop()
    assert len(inbox.messages) == 3
