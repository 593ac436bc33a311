"""Meta's webhook signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.

The HMAC is over the raw bytes as Meta sent them (Meta escapes non-ASCII as `\\uXXXX`, slashes as
`\\/`), keyed with the app secret: re-serialized JSON would not match, so verify before parsing.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Hub-Signature-256"
PREFIX = "sha256="


def sign(app_secret: str, body: bytes) -> str:
    """The header value Meta sends with `body`."""
    return PREFIX + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(app_secret: str, body: bytes, header: str | None) -> bool:
    """Whether `header` is the signature of `body`; constant time in what is compared."""
    if header is None or not header.startswith(PREFIX):
        return False
    return hmac.compare_digest(header.lower().encode(), sign(app_secret, body).encode())
