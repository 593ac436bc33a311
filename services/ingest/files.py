"""Downloading files from a platform: what every platform's `FileSource` answers, and its errors.

A source downloads a customer's attachment, or a customer's profile picture, into memory, never
past the size it is given (the platform's limit and chatdesk's, whichever is smaller). What
becomes of the file (the blob store, the events) is `fetching.py`'s business.
"""

from __future__ import annotations

import io
import mimetypes
import posixpath
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

from libs.common.events import Attachment
from services.ingest.models import Channel

OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class Downloaded:
    data: bytes
    content_type: str
    name: str


class FileTooLarge(Exception):
    """The file is over the limit: it is shown by name and size, not kept."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FetchFailed(Exception):
    """The platform would not give the file. `reason` is shown to agents, so it never holds a
    URL (they may carry tokens); `temporary` says whether trying later may help."""

    def __init__(self, reason: str, *, temporary: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.temporary = temporary


class FileSource(Protocol):
    """One platform's way of downloading files (ingest holds the credentials)."""

    async def attachment(self, channel: Channel, attachment: Attachment, limit: int) -> Downloaded:
        """The file of a customer's message; raises FileTooLarge or FetchFailed."""
        ...

    async def picture(self, channel: Channel, user_id: str, limit: int) -> Downloaded | None:
        """The customer's profile picture, or None if they have none we may see."""
        ...


def too_large(limit: int) -> FileTooLarge:
    return FileTooLarge(f"The file is larger than {megabytes(limit)}, the most chatdesk keeps.")


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"


class LimitedBuffer(io.BytesIO):
    """A download's destination that refuses to grow past `limit` bytes (a platform's size
    field can be missing, or wrong)."""

    def __init__(self, limit: int, error: FileTooLarge) -> None:
        super().__init__()
        self.limit = limit
        self.error = error

    def write(self, chunk: bytes) -> int:  # type: ignore[override]
        if self.tell() + len(chunk) > self.limit:
            raise self.error
        return super().write(chunk)


def name_from_path(path: str | None) -> str | None:
    """The last segment of a URL or file path ("photos/file_3.jpg" → "file_3.jpg")."""
    if not path:
        return None
    last = posixpath.basename(unquote(urlsplit(path).path))
    return last or None


def content_type_of(name: str | None, declared: str | None, fallback: str = OCTET_STREAM) -> str:
    """What the platform said the file is, else what its name says, else `fallback`."""
    if declared and declared != OCTET_STREAM:
        return declared.split(";")[0].strip()
    guessed = mimetypes.guess_type(name)[0] if name else None
    return guessed or fallback


def file_name(name: str | None, content_type: str, kind: str) -> str:
    """A name for the file: its own, else one made of its kind and type ("photo.jpg")."""
    if name:
        return name
    extension = mimetypes.guess_extension(content_type) or ""
    return f"{kind}{extension}"
