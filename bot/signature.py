"""GitHub webhook signatures: HMAC-SHA256 of the raw body, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def matching_secret(secrets: Sequence[str], body: bytes, header: str | None) -> int | None:
    """The index of the secret under which ``header`` signs ``body``, or None for a missing,
    malformed or wrong header. Several secrets: while a new one is rolled out, GitHub may still
    sign with the old one."""
    if not header or not header.startswith(PREFIX):
        return None
    for index, secret in enumerate(secrets):
        if hmac.compare_digest(sign(secret, body), header):
            return index
    return None
