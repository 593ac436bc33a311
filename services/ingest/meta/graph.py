"""The Graph API calls ingest makes, and Meta's error shape.

Every call carries the page access token as `access_token` and, because we hold the app secret,
`appsecret_proof` (its HMAC-SHA256 of the token), which apps set to "Require App Secret" demand.
The token is in the query string as Meta documents it: the httpx logger is kept at WARNING and
`redact()` masks `token=` values, so it reaches no log line.

Errors come as `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from services.ingest.models import Channel

M = TypeVar("M", bound=BaseModel)

# Meta's codes (developers.facebook.com/docs/messenger-platform/error-codes).
TOKEN_INVALID = 190
OUTSIDE_WINDOW = (10, 2018278)
UNAVAILABLE_CODE, UNAVAILABLE_SUBCODE = 551, 1545041
RATE_LIMITS = {4, 17, 32, 613}  # app, user, page, and per-call rate limits
TEMPORARY = {1, 2, 1200}  # "unknown error", "please retry later", "temporary send failure"
NO_PROFILE = (100, 2018218)
UPLOAD_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Credentials:
    """What a Graph call needs of a channel (or of a channel being created)."""

    api_base: str
    token: str
    app_secret: str

    @classmethod
    def of(cls, channel: Channel) -> Credentials:
        return cls(channel.api_base, channel.token, channel.secret)

    def params(self) -> dict[str, str]:
        proof = hmac.new(self.app_secret.encode(), self.token.encode(), hashlib.sha256)
        return {"access_token": self.token, "appsecret_proof": proof.hexdigest()}


class _ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: str = ""
    type: str | None = None
    code: int | None = None
    error_subcode: int | None = None
    fbtrace_id: str | None = None


class _ErrorBody(BaseModel):
    error: _ErrorDetail


class GraphUnreachable(Exception):
    """No answer from the Graph API (connection, timeout)."""


class GraphError(Exception):
    """The Graph API answered with an error."""

    def __init__(self, http_status: int, detail: _ErrorDetail) -> None:
        super().__init__(f"HTTP {http_status}, code {detail.code}: {detail.message}")
        self.http_status = http_status
        self.code = detail.code
        self.subcode = detail.error_subcode
        self.message = detail.message
        self.fbtrace_id = detail.fbtrace_id

    @classmethod
    def of(cls, response: httpx.Response) -> GraphError:
        try:
            detail = _ErrorBody.model_validate_json(response.content).error
        except ValidationError:
            detail = _ErrorDetail(message=f"HTTP {response.status_code} without a Graph error")
        return cls(response.status_code, detail)

    @property
    def token_invalid(self) -> bool:
        return self.code == TOKEN_INVALID

    @property
    def outside_window(self) -> bool:
        return (self.code, self.subcode) == OUTSIDE_WINDOW

    @property
    def recipient_unavailable(self) -> bool:
        return self.code == UNAVAILABLE_CODE or self.subcode == UNAVAILABLE_SUBCODE

    @property
    def rate_limited(self) -> bool:
        return self.code in RATE_LIMITS or self.http_status == 429

    @property
    def temporary(self) -> bool:
        return self.http_status >= 500 or self.code in TEMPORARY


class Page(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    id: str
    name: str = ""


class Profile(BaseModel):
    """A customer's public profile. `profile_pic` is a URL that expires: whoever keeps the
    picture must download it, not store the URL."""

    model_config = ConfigDict(extra="ignore")

    first_name: str | None = None
    last_name: str | None = None
    profile_pic: str | None = None


class Sent(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    recipient_id: str | None = None
    message_id: str


class Graph:
    """One HTTP client for every channel's Graph calls."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.http = httpx.AsyncClient(timeout=timeout_s)

    async def _call(
        self,
        method: str,
        credentials: Credentials,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        timeout_s: float | None = None,
    ) -> bytes:
        try:
            response = await self.http.request(
                method,
                f"{credentials.api_base}{path}",
                params={**(params or {}), **credentials.params()},
                json=body,
                data=form,
                files=files,
                timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            # Only the kind of failure: the message of some could carry the URL, and its token.
            raise GraphUnreachable(type(exc).__name__) from None
        if response.status_code != httpx.codes.OK:
            raise GraphError.of(response)
        return response.content

    async def page(self, credentials: Credentials) -> Page:
        """The page the token speaks for (a user token answers with the user instead)."""
        return _parse(
            Page, await self._call("GET", credentials, "/me", params={"fields": "id,name"})
        )

    async def profile(self, credentials: Credentials, psid: str, timeout_s: float) -> Profile:
        return _parse(
            Profile,
            await self._call(
                "GET",
                credentials,
                f"/{quote(psid, safe='')}",
                params={"fields": "first_name,last_name,profile_pic"},
                timeout_s=timeout_s,
            ),
        )

    async def send_text(
        self, credentials: Credentials, psid: str, text: str, *, tag: str | None = None
    ) -> Sent:
        """Send API: a reply within the 24-hour window, or a tagged message outside it."""
        body: dict[str, Any] = {
            "recipient": {"id": psid},
            "messaging_type": "MESSAGE_TAG" if tag else "RESPONSE",
            "message": {"text": text},
        }
        if tag:
            body["tag"] = tag
        return _parse(Sent, await self._call("POST", credentials, "/me/messages", body=body))

    async def send_attachment(
        self,
        credentials: Credentials,
        psid: str,
        *,
        kind: str,
        data: bytes,
        name: str,
        content_type: str,
        tag: str | None = None,
    ) -> Sent:
        """Send API with the file itself (multipart `filedata`): `kind` is Messenger's attachment
        type (image, video, audio, file). `is_reusable` keeps it on Meta's side for resending."""
        message = {"attachment": {"type": kind, "payload": {"is_reusable": True}}}
        form = {
            "recipient": json.dumps({"id": psid}),
            "messaging_type": "MESSAGE_TAG" if tag else "RESPONSE",
            "message": json.dumps(message),
        }
        if tag:
            form["tag"] = tag
        content = await self._call(
            "POST",
            credentials,
            "/me/messages",
            form=form,
            files={"filedata": (name, data, content_type)},
            timeout_s=UPLOAD_TIMEOUT_S,
        )
        return _parse(Sent, content)

    async def close(self) -> None:
        await self.http.aclose()


def _parse(model: type[M], content: bytes) -> M:
    try:
        return model.model_validate_json(content)
    except ValidationError:
        raise GraphError(
            httpx.codes.OK, _ErrorDetail(message=f"unexpected answer for {model.__name__}")
        ) from None
