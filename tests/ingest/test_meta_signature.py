"""X-Hub-Signature-256: HMAC-SHA256 of the raw body with the app secret, as Meta computes it."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from services.ingest.meta.signature import sign, signature_matches

APP_SECRET = "0123456789abcdef0123456789abcdef"
BODY = (Path(__file__).parent / "fixtures" / "messenger" / "unicode.json").read_bytes()


def test_signature_of_the_raw_bytes_matches() -> None:
    header = "sha256=" + hmac.new(APP_SECRET.encode(), BODY, hashlib.sha256).hexdigest()

    assert sign(APP_SECRET, BODY) == header
    assert signature_matches(APP_SECRET, BODY, header)


def test_re_serialized_json_does_not_match() -> None:
    # Meta escapes non-ASCII (`\u00fc`) and slashes (`\/`); the same JSON written back differs.
    header = sign(APP_SECRET, BODY)
    for rewritten in (
        json.dumps(json.loads(BODY), ensure_ascii=False).encode(),
        json.dumps(json.loads(BODY)).encode(),
    ):
        assert rewritten != BODY
        assert not signature_matches(APP_SECRET, rewritten, header)


def test_utf8_bodies_are_signed_as_sent() -> None:
    body = '{"text": "Grüße — заказ № 5 🙏"}'.encode()

    assert signature_matches(APP_SECRET, body, sign(APP_SECRET, body))


def test_wrong_missing_or_malformed_signatures_fail() -> None:
    good = sign(APP_SECRET, BODY)

    assert not signature_matches("another-app-secret", BODY, good)
    assert not signature_matches(APP_SECRET, BODY + b" ", good)
    assert not signature_matches(APP_SECRET, BODY, None)
    assert not signature_matches(APP_SECRET, BODY, "")
    assert not signature_matches(APP_SECRET, BODY, good.removeprefix("sha256="))
    assert not signature_matches(APP_SECRET, BODY, "sha1=" + good.removeprefix("sha256="))
    assert not signature_matches(APP_SECRET, BODY, good[:-1])
    assert not signature_matches(APP_SECRET, BODY, "sha256=ünïcödé")


def test_hex_case_does_not_matter() -> None:
    assert signature_matches(APP_SECRET, BODY, sign(APP_SECRET, BODY).upper().replace("SHA", "sha"))
