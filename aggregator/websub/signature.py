"""Secrets, callback paths and the ``X-Hub-Signature`` check (WebSub sections 5.1, 7, 8).

A delivery is authentic only when ``X-Hub-Signature: <method>=<hex>`` is the HMAC of
the raw body under a secret we gave the hub. Methods weaker than SHA-256 are refused
(the spec allows ``sha1``; a hub that uses it gets its deliveries ignored, and the
source stays polled).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from typing import Any

#: Signature methods accepted: HMAC-SHA256 or stronger.
METHODS: dict[str, Callable[..., Any]] = {
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}


def new_secret() -> str:
    """A fresh ``hub.secret``: 256 random bits as 64 hex characters (the spec caps it at 200
    bytes)."""
    return secrets.token_hex(32)


def new_token() -> str:
    """A fresh callback path: 256 random bits, URL-safe (unguessable)."""
    return secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, method: str = "sha256") -> str:
    """The ``X-Hub-Signature`` value a hub sends for ``body`` under ``secret``."""
    return f"{method}={hmac.new(secret.encode(), body, METHODS[method]).hexdigest()}"


def signature_ok(header: str | None, body: bytes, keys: Iterable[str | None]) -> bool:
    """True when ``header`` is a SHA-256 (or stronger) HMAC of ``body`` under one of ``keys``."""
    if not header:
        return False
    method, _, given = header.strip().partition("=")
    digest = METHODS.get(method.strip().lower())
    if digest is None or not given:
        return False
    given = given.strip().lower()
    found = False
    for key in keys:
        if key:
            expected = hmac.new(key.encode(), body, digest).hexdigest()
            found |= hmac.compare_digest(expected, given)
    return found


def mark(header: str) -> str:
    """What identifies one signed delivery (the same body under the same secret): a replay
    has the same mark."""
    return hashlib.sha256(header.strip().lower().encode()).hexdigest()
