"""A local stand-in for the Telegram Bot API: same URLs, same JSON shapes, scriptable errors.

Channels point their `api_base` at it. It records every call so tests can assert what the
customer would have received. Besides `sendMessage` it serves
- `getFile` (`{file_id, file_unique_id, file_size, file_path}`; "Bad Request: file is too big"
  past 20 MB, as the real one) and the download at `/file/bot<token>/<file_path>`;
- `getUserProfilePhotos` (`{total_count, photos: [[PhotoSize, ...], ...]}`);
- `sendPhoto` and `sendDocument` as multipart, the file under `attach://<name>` as aiogram sends
  it (or directly in the field), answering the `Message` with its `photo` or `document`.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DOWNLOAD_LIMIT = 20 * 1024 * 1024


@dataclass
class Call:
    token: str
    method: str
    params: dict[str, Any]  # a file parameter is an `Upload`


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
class FakeTelegram:
    calls: list[Call] = field(default_factory=list)
    # method -> queue of error answers to give before succeeding, e.g.
    # {"sendMessage": [(403, "Forbidden: bot was blocked by the user")]}
    errors: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
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

    async def _endpoint(self, request: Request) -> JSONResponse:
        token, method = request.path_params["token"], request.path_params["method"]
        params = await _params(request)
        self.calls.append(Call(token, method, params))
        if self.delays.get(method):
            await asyncio.sleep(self.delays[method])
        if self.errors.get(method):
            code, description = self.errors[method].pop(0)
            return _error(code, description)
        try:
            result = self._result(token, method, params)
        except _Refused as refused:
            return _error(400, refused.description)
        return JSONResponse({"ok": True, "result": result})

    def _result(self, token: str, method: str, params: dict[str, Any]) -> Any:
        bot_id = int(token.split(":")[0])
        if method == "getMe":
            return {"id": bot_id, "is_bot": True, "first_name": "Fake bot", "username": "fake_bot"}
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(fake: FakeTelegram) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    fake.url = f"http://127.0.0.1:{port}"
    return server, task
