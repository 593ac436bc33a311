"""A local stand-in for the Telegram Bot API: same URLs, same JSON shapes, scriptable errors.

Channels point their `api_base` at it. It serves, per bot token:
- `getMe` — the bot (its id is the token's number), or 401 for a token in `refused_tokens`;
- `setWebhook`, `deleteWebhook`, `getWebhookInfo` — one webhook per bot, as Telegram keeps it;
- `getUpdates` — long polling over the updates a test `push`es: `offset` confirms (forgets) the
  updates below it, an empty queue waits up to `timeout` (at most `max_wait_s`), a second
  getUpdates ends the waiting one with 409, and a set webhook makes it 409 too;
- `sendMessage` — answers the sent Message;
- `getFile` (`{file_id, file_unique_id, file_size, file_path}`; "Bad Request: file is too big"
  past 20 MB, as the real one) and the download at `/file/bot<token>/<file_path>`;
- `getUserProfilePhotos` (`{total_count, photos: [[PhotoSize, ...], ...]}`);
- `sendPhoto` and `sendDocument` as multipart, the file under `attach://<name>` as aiogram sends
  it (or directly in the field), answering the `Message` with its `photo` or `document`.
Every other method answers `true`. It records every call, and answers the errors a test
scripts in `errors`, in Telegram's shape: `{"ok": false, "error_code", "description",
"parameters": {"retry_after"}}`.
"""

from __future__ import annotations

import asyncio
import itertools
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

DOWNLOAD_LIMIT = 20 * 1024 * 1024

# As Telegram answers them.
UNAUTHORIZED = (401, "Unauthorized")
BLOCKED = (403, "Forbidden: bot was blocked by the user")
DEACTIVATED = (403, "Forbidden: user is deactivated")
TOO_MANY_REQUESTS = (429, "Too Many Requests: retry after 1")
BAD_GATEWAY = (502, "Bad Gateway")
WEBHOOK_ACTIVE = (
    409,
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first",
)
OTHER_POLLER = (
    409,
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is "
    "running",
)


@dataclass
class Call:
    token: str
    method: str
    params: dict[str, Any]  # a file parameter is an `Upload`
    at: float = 0.0  # time.monotonic() when it arrived


@dataclass(frozen=True)
class Upload:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(frozen=True)
class StoredFile:
    file_id: str
    unique_id: str
    path: str
    data: bytes
    size: int  # what Telegram says; a test may claim more than `data` holds


@dataclass
class Webhook:
    url: str
    secret_token: str | None
    allowed_updates: list[str] | None


@dataclass
class BotState:
    """What Telegram keeps for one bot."""

    webhook: Webhook | None = None
    updates: list[dict[str, Any]] = field(default_factory=list)  # not yet confirmed
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    polls: int = 0  # getUpdates requests so far: a newer one ends a waiting one
    last_error: tuple[int, str] | None = None  # a webhook delivery error: (unix time, message)


@dataclass
class FakeTelegram:
    calls: list[Call] = field(default_factory=list)
    # method -> queue of error answers to give before succeeding, e.g.
    # {"sendMessage": [(403, "Forbidden: bot was blocked by the user")]}
    errors: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    refused_tokens: set[str] = field(default_factory=set)
    bots: dict[str, BotState] = field(default_factory=dict)
    max_wait_s: float = 1.0  # a long poll here waits at most this long: tests stay quick
    _message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    files: dict[str, StoredFile] = field(default_factory=dict)  # by file_id
    # user id -> the user's profile pictures, each a list of sizes (PhotoSize), newest first
    profile_photos: dict[int, list[list[dict[str, Any]]]] = field(default_factory=dict)
    downloads: list[tuple[str, str]] = field(default_factory=list)  # (token, file_path)
    # method -> seconds to wait before answering (a slow Telegram)
    delays: dict[str, float] = field(default_factory=dict)
    url: str = ""

    def sent(self, method: str = "sendMessage") -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def add_file(self, data: bytes, folder: str, extension: str, *, size: int | None = None) -> str:
        """A file a customer sent; its `file_id`."""
        file_id = "BQACAgIAAxkBAAI" + secrets.token_urlsafe(24)
        path = f"{folder}/file_{len(self.files)}.{extension}"
        unique_id = "AgAD" + secrets.token_urlsafe(8)
        self.files[file_id] = StoredFile(
            file_id, unique_id, path, data, len(data) if size is None else size
        )
        return file_id

    def photo_sizes(self, *sizes: tuple[bytes, int, int]) -> list[dict[str, Any]]:
        """A `photo` array (PhotoSize objects) of (data, width, height), each a stored file."""
        photo = []
        for data, width, height in sizes:
            file_id = self.add_file(data, "photos", "jpg")
            stored = self.files[file_id]
            photo.append(
                {
                    "file_id": file_id,
                    "file_unique_id": stored.unique_id,
                    "file_size": stored.size,
                    "width": width,
                    "height": height,
                }
            )
        return photo

    def add_profile_photo(self, user_id: int, *sizes: tuple[bytes, int, int]) -> None:
        self.profile_photos.setdefault(user_id, []).insert(0, self.photo_sizes(*sizes))

    async def wait_sent(
        self, count: int, method: str = "sendMessage", timeout: float = 15
    ) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.sent(method)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} {method} calls, got {self.sent(method)}")
            await asyncio.sleep(0.05)
        return self.sent(method)

    def bot(self, token: str) -> BotState:
        return self.bots.setdefault(token, BotState())

    def push(self, token: str, *updates: dict[str, Any]) -> None:
        """Updates for the bot's getUpdates queue, as if customers had just written."""
        state = self.bot(token)
        state.updates.extend(updates)
        state.arrived.set()

    async def _endpoint(self, request: Request) -> JSONResponse:
        token, method = request.path_params["token"], request.path_params["method"]
        params = await _params(request)
        self.calls.append(Call(token, method, params, time.monotonic()))
        if self.delays.get(method):
            await asyncio.sleep(self.delays[method])
        if self.errors.get(method):
            return _error(*self.errors[method].pop(0))
        if token in self.refused_tokens:
            return _error(*UNAUTHORIZED)
        if method == "getUpdates":
            return await self._get_updates(token, params)
        try:
            answer = self._result(token, method, params)
        except _Refused as refused:
            return _error(400, refused.description)
        if isinstance(answer, JSONResponse):
            return answer
        return JSONResponse({"ok": True, "result": answer})

    def _result(self, token: str, method: str, params: dict[str, Any]) -> Any:
        bot_id = int(token.split(":")[0])
        state = self.bot(token)
        if method == "getMe":
            return {
                "id": bot_id,
                "is_bot": True,
                "first_name": "Fake bot",
                "username": f"fake_{bot_id}_bot",
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
                "can_connect_to_business": False,
                "has_main_web_app": False,
            }
        if method == "setWebhook":
            allowed = params.get("allowed_updates")
            state.webhook = Webhook(
                params["url"],
                params.get("secret_token"),
                json.loads(allowed) if allowed else None,
            )
            return JSONResponse({"ok": True, "result": True, "description": "Webhook was set"})
        if method == "deleteWebhook":
            description = "Webhook was deleted" if state.webhook else "Webhook is already deleted"
            state.webhook = None
            if params.get("drop_pending_updates") in ("true", "True", "1"):
                state.updates.clear()
            return JSONResponse({"ok": True, "result": True, "description": description})
        if method == "getWebhookInfo":
            return self._webhook_info(state)
        if method in ("sendMessage", "sendPhoto", "sendDocument"):
            message: dict[str, Any] = {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "from": {"id": bot_id, "is_bot": True, "first_name": "Fake bot"},
            }
            if method == "sendMessage":
                return message | {"text": params.get("text", "")}
            if params.get("caption"):
                message["caption"] = params["caption"]
            if method == "sendPhoto":
                return message | {"photo": [self._sent_file(params.get("photo"), "photo")]}
            return message | {"document": self._sent_file(params.get("document"), "document")}
        if method == "getFile":
            stored = self.files.get(str(params.get("file_id")))
            if stored is None:
                raise _Refused("Bad Request: invalid file_id")
            if stored.size > DOWNLOAD_LIMIT:
                raise _Refused("Bad Request: file is too big")
            return {
                "file_id": stored.file_id,
                "file_unique_id": stored.unique_id,
                "file_size": stored.size,
                "file_path": stored.path,
            }
        if method == "getUserProfilePhotos":
            photos = self.profile_photos.get(int(params["user_id"]), [])
            limit = int(params.get("limit") or 100)
            return {"total_count": len(photos), "photos": photos[:limit]}
        return True

    def _webhook_info(self, state: BotState) -> dict[str, Any]:
        if state.webhook is None:
            return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        info: dict[str, Any] = {
            "url": state.webhook.url,
            "has_custom_certificate": False,
            "pending_update_count": len(state.updates),
            "max_connections": 40,
            "ip_address": "127.0.0.1",
        }
        if state.webhook.allowed_updates is not None:
            info["allowed_updates"] = state.webhook.allowed_updates
        if state.last_error is not None:
            info["last_error_date"], info["last_error_message"] = state.last_error
        return info

    async def _get_updates(self, token: str, params: dict[str, Any]) -> JSONResponse:
        state = self.bot(token)
        if state.webhook is not None:
            return _error(*WEBHOOK_ACTIVE)
        state.polls += 1
        mine = state.polls
        state.arrived.set()  # wakes a waiting getUpdates, which then answers 409
        offset = int(params["offset"]) if params.get("offset") else None
        if offset is not None:  # an update is confirmed once an offset above it is asked for
            state.updates = [u for u in state.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), self.max_wait_s)
        while not state.updates and time.monotonic() < deadline:
            state.arrived.clear()
            try:
                await asyncio.wait_for(state.arrived.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
            if state.polls != mine:
                return _error(*OTHER_POLLER)
        limit = int(params.get("limit") or 100)
        return JSONResponse({"ok": True, "result": state.updates[:limit]})

    def _sent_file(self, upload: Any, kind: str) -> dict[str, Any]:
        if not isinstance(upload, Upload):
            raise _Refused(f"Bad Request: there is no {kind} in the request")
        file_id = self.add_file(upload.data, f"{kind}s", "bin")
        stored = self.files[file_id]
        if kind == "photo":
            return {
                "file_id": file_id,
                "file_unique_id": stored.unique_id,
                "file_size": stored.size,
                "width": 800,
                "height": 600,
            }
        return {
            "file_id": file_id,
            "file_unique_id": stored.unique_id,
            "file_name": upload.filename,
            "mime_type": upload.content_type,
            "file_size": stored.size,
        }

    async def _download(self, request: Request) -> Response:
        token, path = request.path_params["token"], request.path_params["path"]
        self.downloads.append((token, path))
        if self.delays.get("download"):
            await asyncio.sleep(self.delays["download"])
        for stored in self.files.values():
            if stored.path == path and stored.size <= DOWNLOAD_LIMIT:
                return Response(stored.data, media_type="application/octet-stream")
        return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"}, 404)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"]),
                Route("/file/bot{token}/{path:path}", self._download, methods=["GET"]),
            ]
        )


class _Refused(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def _error(code: int, description: str) -> JSONResponse:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if code == 429:
        body["parameters"] = {"retry_after": 1}
    return JSONResponse(body, status_code=code)


async def _params(request: Request) -> dict[str, Any]:
    """A call's parameters, form or multipart; `attach://<name>` resolved to its `Upload`."""
    form = await request.form()
    uploads: dict[str, Upload] = {}
    params: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            uploads[key] = Upload(value.filename, value.content_type, await value.read())
        else:
            params[key] = value
    for key, value in list(params.items()):
        if isinstance(value, str) and value.startswith("attach://"):
            params[key] = uploads.pop(value.removeprefix("attach://"), None)
    params.update(uploads)  # files sent in their own field
    return params


async def serve(fake: FakeTelegram) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server, task, fake.url = await serving.serve(fake.app())
    return server, task
