"""A local stand-in for the Graph API calls of Messenger: same paths, same JSON, Meta's errors.

Channels point their `api_base` at `FakeFacebook.api_base` (`<url>/v25.0`). It serves
- `GET /me` — the page a page access token speaks for;
- `GET /{psid}` — the User Profile API;
- `POST /me/messages` (or `/{page_id}/messages`) — the Send API, answering `recipient_id` and
  `message_id`: JSON for text (or an attachment by URL), multipart for an uploaded file
  (`recipient` and `message` as JSON strings, the file in `filedata`; `attachment_id` answered
  too when `is_reusable`);
checks `access_token` and `appsecret_proof` as Graph does, records every call, and answers the
errors a test scripts, in Meta's shape: `{"error": {message, type, code, error_subcode,
fbtrace_id}}`.
It also plays Meta's CDN: `host()` serves bytes at a URL like the ones webhooks and `profile_pic`
carry (no token needed, none expected).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support import serving

VERSION = "v25.0"


@dataclass(frozen=True)
class MetaError:
    http_status: int
    code: int
    subcode: int | None
    message: str
    type: str = "OAuthException"

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "code": self.code,
            "fbtrace_id": "A" + secrets.token_urlsafe(15),
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        return {"error": error}


# As Graph answers them (messages as seen in the wild; codes from Meta's error reference).
OUTSIDE_WINDOW = MetaError(
    400,
    10,
    2018278,
    "(#10) This message is sent outside of allowed window. Learn more about the new policy "
    "here: https://developers.facebook.com/docs/messenger-platform/policy-overview",
)
UNAVAILABLE = MetaError(400, 551, 1545041, "(#551) This person isn't available right now.")
TOKEN_EXPIRED = MetaError(
    400,
    190,
    463,
    "Error validating access token: Session has expired on Monday, 10-Jun-24 02:00:00 PDT. "
    "The current time is Monday, 10-Jun-24 03:00:00 PDT.",
)
TOKEN_UNPARSABLE = MetaError(
    400, 190, None, "Invalid OAuth access token - Cannot parse access token"
)
NO_PROFILE = MetaError(400, 100, 2018218, "(#100) No profile available for this user.")
RATE_LIMITED = MetaError(400, 613, None, "(#613) Calls to this API have exceeded the rate limit.")
SERVER_ERROR = MetaError(
    500, 2, None, "An unexpected error has occurred. Please retry your request later."
)
BAD_PROOF = MetaError(
    400, 100, None, "Invalid appsecret_proof provided in the API argument", "GraphMethodException"
)


@dataclass(frozen=True)
class Page:
    id: str
    name: str
    app_secret: str


@dataclass(frozen=True)
class Upload:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class GraphCall:
    method: str
    path: str
    params: dict[str, str]
    body: dict[str, Any] | None
    at: float  # when it arrived (time.time())
    answer: dict[str, Any] | None = None  # what a successful call was answered
    upload: Upload | None = None  # a multipart call's `filedata`


ATTACHMENT_TYPES = ("image", "video", "audio", "file")


@dataclass
class FakeFacebook:
    pages: dict[str, Page] = field(default_factory=dict)  # by page access token
    profiles: dict[str, dict[str, str]] = field(default_factory=dict)  # by PSID
    calls: list[GraphCall] = field(default_factory=list)
    # "messages" | "profile" | "me" -> errors to answer, in order, before succeeding again.
    errors: dict[str, list[MetaError]] = field(default_factory=dict)
    cdn: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # path -> (bytes, type)
    cdn_calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, query)
    url: str = ""

    def host(self, data: bytes, content_type: str, name: str) -> str:
        """Serve `data` as Meta's CDN would; its URL (signed-looking, and expiring in life)."""
        path = f"/v/t1.15752-9/{secrets.token_hex(6)}_{name}"
        self.cdn[path] = (data, content_type)
        return f"{self.url}{path}?_nc_cat=1&oh={secrets.token_hex(8)}&oe=6A1B2C3D"

    def expired_url(self, name: str) -> str:
        return f"{self.url}/v/t1.15752-9/expired_{name}?oh=0&oe=0"

    @property
    def api_base(self) -> str:
        return f"{self.url}/{VERSION}"

    def add_page(self, token: str, page_id: str, name: str, app_secret: str) -> None:
        self.pages[token] = Page(page_id, name, app_secret)

    def sent(self) -> list[GraphCall]:
        """Send API calls, answered or refused."""
        return [c for c in self.calls if c.method == "POST" and c.path.endswith("/messages")]

    @property
    def last_message_id(self) -> str:
        """The `message_id` of the last message the Send API took."""
        answered = [c.answer for c in self.sent() if c.answer is not None]
        return str(answered[-1]["message_id"])

    async def wait_sent(self, count: int, timeout: float = 15) -> list[GraphCall]:
        deadline = time.monotonic() + timeout
        while len(self.sent()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} Send API calls, got {self.sent()}")
            await asyncio.sleep(0.05)
        return self.sent()

    async def _endpoint(self, request: Request) -> JSONResponse:
        params = dict(request.query_params)
        body, upload = await _body(request)
        call = GraphCall(request.method, request.url.path, params, body, time.time(), upload=upload)
        self.calls.append(call)
        response = self._answer(request, params, body, upload)
        if response.status_code == 200:
            call.answer = json.loads(response.body)
        return response

    async def _cdn(self, request: Request) -> Response:
        self.cdn_calls.append((request.url.path, dict(request.query_params)))
        hosted = self.cdn.get(request.url.path)
        if hosted is None:
            return Response(b"URL signature expired", status_code=403, media_type="text/plain")
        data, content_type = hosted
        return Response(data, media_type=content_type)

    def _answer(
        self,
        request: Request,
        params: dict[str, str],
        body: dict[str, Any] | None,
        upload: Upload | None,
    ) -> JSONResponse:
        node = request.path_params["node"]
        edge = request.path_params.get("edge")
        page = self.pages.get(params.get("access_token", ""))
        if page is None:
            return _error(TOKEN_UNPARSABLE)
        proof = params.get("appsecret_proof")
        expected = hmac.new(
            page.app_secret.encode(), params["access_token"].encode(), hashlib.sha256
        ).hexdigest()
        if proof is not None and not hmac.compare_digest(proof, expected):
            return _error(BAD_PROOF)
        if request.method == "POST" and edge == "messages" and node in ("me", page.id):
            return self._send(body or {}, upload)
        if request.method == "GET" and edge is None and node == "me":
            return self._scripted("me") or JSONResponse({"name": page.name, "id": page.id})
        if request.method == "GET" and edge is None:
            return self._scripted("profile") or self._profile(node)
        return _error(MetaError(400, 100, 33, f"Unsupported {request.method} request."))

    def _scripted(self, call: str) -> JSONResponse | None:
        if self.errors.get(call):
            return _error(self.errors[call].pop(0))
        return None

    def _send(self, body: dict[str, Any], upload: Upload | None) -> JSONResponse:
        psid = body.get("recipient", {}).get("id")
        message = body.get("message", {})
        text, attachment = message.get("text"), message.get("attachment")
        kind = body.get("messaging_type")
        if not psid or kind not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
            return _error(MetaError(400, 100, None, "(#100) Invalid parameter"))
        if attachment is not None:
            return self._send_attachment(body, attachment, upload)
        if text is None:
            return _error(MetaError(400, 100, None, "(#100) Invalid parameter"))
        if kind == "MESSAGE_TAG" and body.get("tag") != "HUMAN_AGENT":
            return _error(MetaError(400, 100, 2018385, "(#100) Invalid message tag"))
        if len(text) > 2000:
            return _error(
                MetaError(
                    400,
                    100,
                    None,
                    "(#100) Length of param message[text] must be less than or equal to 2000",
                )
            )
        scripted = self._scripted("messages")
        if scripted is not None:
            return scripted
        return JSONResponse({"recipient_id": psid, "message_id": "m_" + secrets.token_urlsafe(40)})

    def _send_attachment(
        self, body: dict[str, Any], attachment: dict[str, Any], upload: Upload | None
    ) -> JSONResponse:
        payload = attachment.get("payload") or {}
        if attachment.get("type") not in ATTACHMENT_TYPES:
            return _error(MetaError(400, 100, None, "(#100) Invalid attachment type"))
        if upload is None and not payload.get("url") and not payload.get("attachment_id"):
            return _error(MetaError(400, 100, 2018047, "(#100) Upload attachment failure."))
        if body.get("messaging_type") == "MESSAGE_TAG" and body.get("tag") != "HUMAN_AGENT":
            return _error(MetaError(400, 100, 2018385, "(#100) Invalid message tag"))
        scripted = self._scripted("messages")
        if scripted is not None:
            return scripted
        answer = {
            "recipient_id": body["recipient"]["id"],
            "message_id": "m_" + secrets.token_urlsafe(40),
        }
        if payload.get("is_reusable"):
            answer["attachment_id"] = str(secrets.randbelow(10**15))
        return JSONResponse(answer)

    def _profile(self, psid: str) -> JSONResponse:
        profile = self.profiles.get(psid)
        if profile is None:
            return _error(NO_PROFILE)
        return JSONResponse({**profile, "id": psid})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(f"/{VERSION}/{{node}}", self._endpoint, methods=["GET", "POST"]),
                Route(f"/{VERSION}/{{node}}/{{edge}}", self._endpoint, methods=["GET", "POST"]),
                Route("/v/{path:path}", self._cdn, methods=["GET"]),
            ]
        )


async def _body(request: Request) -> tuple[dict[str, Any] | None, Upload | None]:
    """A POST's JSON body, or a multipart one: its JSON-valued fields parsed, its `filedata`."""
    if request.method != "POST":
        return None, None
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await request.json(), None
    form = await request.form()
    body: dict[str, Any] = {}
    upload = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key == "filedata":
                upload = Upload(value.filename, value.content_type, await value.read())
        elif key in ("recipient", "message"):
            body[key] = json.loads(value)
        else:
            body[key] = value
    return body, upload


def _error(error: MetaError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.http_status)


async def serve(fake: FakeFacebook) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server, task, fake.url = await serving.serve(fake.app())
    return server, task
