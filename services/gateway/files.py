"""Files through the console's API: an agent's upload in, customers' files and pictures out.

Uploads are capped at `CHATDESK_MAX_FILE_MB` before a byte is read (`Content-Length`), and again
by what arrived. Served files come with a `Content-Disposition` carrying their name; only
pictures a browser shows safely are `inline`, and every file is sandboxed (`nosniff`, a CSP
without scripts): a customer's HTML or SVG must not run with the console's origin.
"""

from __future__ import annotations

import mimetypes
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request, Response, status
from starlette.datastructures import UploadFile  # what forms hold (FastAPI's is a subclass)

from libs.common.blobs import Blob

# Room for the multipart framing and a caption around the file itself.
MULTIPART_SLACK = 64 * 1024
MAX_CAPTION = 20_000
PICTURES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
OCTET_STREAM = "application/octet-stream"
FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
    "Cache-Control": "private, max-age=86400",
}
# A served file, for the OpenAPI schema.
FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."}
}


@dataclass(frozen=True)
class Upload:
    data: bytes
    name: str
    content_type: str
    caption: str | None

    @property
    def kind(self) -> str:
        return "photo" if self.content_type in PICTURES else "document"


def too_large(limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"the file is larger than {limit / (1024 * 1024):g} MB, the most chatdesk takes",
    )


async def read_upload(request: Request, limit: int) -> Upload:
    """The multipart reply's `file` (and optional `caption`); a clear 4xx for anything else."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(
            status.HTTP_411_LENGTH_REQUIRED, "send the file with a Content-Length header"
        )
    if int(length) > limit + MULTIPART_SLACK:
        raise too_large(limit)
    async with request.form(max_files=1, max_fields=2, max_part_size=128 * 1024) as form:
        file = form.get("file")
        caption = form.get("caption")
        if not isinstance(file, UploadFile):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "a multipart reply needs its file in a part named `file`",
            )
        if caption is not None and not isinstance(caption, str):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "`caption` must be text")
        data = await file.read(limit + 1)
        name = clean_name(file.filename)
        declared = (file.content_type or "").split(";")[0].strip().lower()
    if len(data) > limit:
        raise too_large(limit)
    if not data:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "the file is empty")
    caption = (caption or "").strip() or None
    if caption is not None and len(caption) > MAX_CAPTION:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the caption is longer than {MAX_CAPTION} characters",
        )
    if not declared or declared == OCTET_STREAM:
        declared = mimetypes.guess_type(name)[0] or OCTET_STREAM
    return Upload(data, name, declared, caption)


def clean_name(filename: str | None) -> str:
    """The file's own name without folders or control characters (it ends up in headers)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:300] or "file"


def file_response(blob: Blob, content_type: str | None, name: str | None) -> Response:
    content_type = content_type or blob.content_type
    name = name or blob.name
    disposition = "inline" if content_type in PICTURES else "attachment"
    return Response(
        blob.data,
        media_type=content_type,
        headers={"Content-Disposition": content_disposition(disposition, name), **FILE_HEADERS},
    )


def content_disposition(disposition: str, name: str) -> str:
    """RFC 6266: an ASCII `filename` for old clients, and the real name as UTF-8 `filename*`."""
    name = clean_name(name)
    fallback = "".join(c if c.isascii() and c not in '"\\' else "_" for c in name)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
