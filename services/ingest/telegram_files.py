"""Telegram files: `getFile`, then the download from `{api_base}/file/bot<token>/<file_path>`.

aiogram builds that URL and streams it; the URL holds the bot token, so no error raised here
carries the URL or aiohttp's message (which can quote it), only what went wrong.
Bots may download at most 20 MB through the public Bot API: a larger file is too large however
large chatdesk's own limit is.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)

from libs.common.events import Attachment
from services.ingest.files import (
    Downloaded,
    FetchFailed,
    FileTooLarge,
    LimitedBuffer,
    content_type_of,
    file_name,
    megabytes,
    name_from_path,
    too_large,
)
from services.ingest.models import Channel
from services.ingest.telegram import DOWNLOAD_LIMIT, TelegramBots

T = TypeVar("T")
DOWNLOAD_TIMEOUT_S = 120


def too_big() -> FileTooLarge:
    return FileTooLarge(
        f"Telegram lets bots download files of at most {megabytes(DOWNLOAD_LIMIT)}."
    )


class TelegramFiles:
    """The `FileSource` of `telegram` channels."""

    def __init__(self, bots: TelegramBots) -> None:
        self.bots = bots

    async def attachment(self, channel: Channel, attachment: Attachment, limit: int) -> Downloaded:
        if not attachment.platform_file_id:
            raise FetchFailed("Telegram named no file to download.")
        kind = attachment.kind
        # Telegram sends photos as JPEG, and names neither them nor voice notes.
        fallback = "image/jpeg" if kind == "photo" else "application/octet-stream"
        data, path = await self._download(channel, attachment.platform_file_id, limit)
        name = attachment.name or name_from_path(path)
        content_type = content_type_of(name, attachment.mime_type, fallback)
        return Downloaded(data, content_type, file_name(name, content_type, kind))

    async def picture(self, channel: Channel, user_id: str, limit: int) -> Downloaded | None:
        bot = self.bots.for_channel(channel)
        photos = await _call(bot.get_user_profile_photos(user_id=int(user_id), limit=1))
        if not photos.photos or not photos.photos[0]:
            return None  # no picture, or the user's privacy settings hide it from bots
        largest = max(photos.photos[0], key=lambda size: size.width * size.height)
        data, _ = await self._download(channel, largest.file_id, limit)
        return Downloaded(data, "image/jpeg", "profile.jpg")

    async def _download(self, channel: Channel, file_id: str, limit: int) -> tuple[bytes, str]:
        bot = self.bots.for_channel(channel)
        limit = min(limit, DOWNLOAD_LIMIT)
        over = too_big() if limit == DOWNLOAD_LIMIT else too_large(limit)
        try:
            file = await _call(bot.get_file(file_id))
        except FetchFailed as failed:
            if "too big" in failed.reason.lower():  # Telegram's own 20 MB limit
                raise too_big() from None
            raise
        if file.file_size is not None and file.file_size > limit:
            raise over
        if not file.file_path:
            raise FetchFailed("Telegram gave no path to download the file from.")
        buffer = LimitedBuffer(limit, over)
        try:
            await bot.download_file(file.file_path, buffer, timeout=DOWNLOAD_TIMEOUT_S)
        except aiohttp.ClientResponseError as exc:
            raise FetchFailed(
                f"Telegram answered the download with HTTP {exc.status}.",
                temporary=exc.status >= 500 or exc.status == 429,
            ) from None
        except (aiohttp.ClientError, TimeoutError):
            raise FetchFailed("Telegram could not be reached.", temporary=True) from None
        return buffer.getvalue(), file.file_path


async def _call(request: Awaitable[T]) -> T:
    """A Bot API call, its failures as `FetchFailed` (Telegram's descriptions hold no token)."""
    try:
        return await request
    except TelegramRetryAfter:
        raise FetchFailed("Telegram is rate-limiting the bot.", temporary=True) from None
    except (TelegramServerError, TelegramNetworkError):
        raise FetchFailed("Telegram could not be reached.", temporary=True) from None
    except TelegramUnauthorizedError:
        raise FetchFailed("The channel's bot token is no longer valid.") from None
    except (TelegramBadRequest, TelegramNotFound, TelegramForbiddenError) as exc:
        raise FetchFailed(f"Telegram refused the file: {exc.message}") from None
