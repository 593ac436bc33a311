"""Messenger files: a customer's attachment is at the URL its webhook gave (Meta's CDN), the
profile picture at the User Profile API's `profile_pic`. Both URLs expire and need no token:
they are fetched as they are, and the page token never goes along.
"""

from __future__ import annotations

import httpx

from libs.common.events import Attachment
from services.ingest.files import (
    Downloaded,
    FetchFailed,
    content_type_of,
    file_name,
    name_from_path,
    too_large,
)
from services.ingest.meta.graph import Graph
from services.ingest.meta.profiles import Profiles
from services.ingest.models import Channel

DOWNLOAD_TIMEOUT_S = 120.0


class FacebookFiles:
    """The `FileSource` of `facebook` channels."""

    def __init__(self, graph: Graph, profiles: Profiles) -> None:
        self.http = graph.http
        self.profiles = profiles

    async def attachment(self, channel: Channel, attachment: Attachment, limit: int) -> Downloaded:
        if not attachment.platform_file_id:
            raise FetchFailed("Facebook gave no address for the file.")
        data, declared, url_name = await self._download(attachment.platform_file_id, limit)
        name = attachment.name or url_name
        content_type = content_type_of(name, declared or attachment.mime_type)
        return Downloaded(data, content_type, file_name(name, content_type, attachment.kind))

    async def picture(self, channel: Channel, user_id: str, limit: int) -> Downloaded | None:
        # Usually cached: the webhook asked for this customer's name moments ago.
        profile = await self.profiles.profile(channel, user_id)
        if profile is None or not profile.profile_pic:
            return None
        data, declared, _ = await self._download(profile.profile_pic, limit)
        content_type = content_type_of(None, declared, "image/jpeg")
        return Downloaded(data, content_type, file_name(None, content_type, "profile"))

    async def _download(self, url: str, limit: int) -> tuple[bytes, str | None, str | None]:
        """The bytes, the declared content type, and the name the URL ends with."""
        try:
            async with self.http.stream(
                "GET", url, timeout=DOWNLOAD_TIMEOUT_S, follow_redirects=True
            ) as response:
                if response.status_code != httpx.codes.OK:
                    status = response.status_code
                    raise FetchFailed(
                        f"Facebook answered the download with HTTP {status}"
                        + (" (the file's address has expired)." if status in (403, 404) else "."),
                        temporary=status >= 500 or status == 429,
                    )
                if int(response.headers.get("content-length") or 0) > limit:
                    raise too_large(limit)
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise too_large(limit)
                return bytes(data), response.headers.get("content-type"), name_from_path(url)
        except httpx.HTTPError:
            # Not the exception's text: it quotes the URL.
            raise FetchFailed("Facebook could not be reached.", temporary=True) from None
