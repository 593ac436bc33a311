"""ingest's HTTP: the platform webhooks (public) and the channel admin API (internal)."""

from __future__ import annotations

from typing import Annotated

import orjson
from aiogram.types import Update
from fastapi import APIRouter, Header, HTTPException, Request, status
from pydantic import ValidationError

from libs.common.db import Database
from libs.common.settings import Settings
from services.ingest import service, telegram
from services.ingest.models import ChannelOut, TelegramChannelIn


def webhook_router(db: Database, inbound: service.InboundCommits) -> APIRouter:
    router = APIRouter(prefix="/webhooks")
    channels = service.ChannelCache(db)

    @router.post("/telegram/{channel_id}")
    async def telegram_webhook(
        channel_id: str,
        request: Request,
        secret: Annotated[str | None, Header(alias="X-Telegram-Bot-Api-Secret-Token")] = None,
    ) -> dict[str, bool]:
        channel = await channels.get(channel_id)
        if channel is None or channel.kind != "telegram" or not channel.active:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown channel")
        if not service.secret_matches(channel, secret):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "bad or missing secret token")
        try:
            update = Update.model_validate(orjson.loads(await request.body()))
        except orjson.JSONDecodeError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body is not JSON: {exc}") from exc
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, {"message": "not a Telegram Update", "errors": errors}
            ) from exc
        message = telegram.normalize(update, channel)
        if message is not None:
            await inbound.submit((f"telegram:{channel.id}:{update.update_id}", message))
        return {"ok": True}

    return router


def internal_router(db: Database, settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/internal")

    @router.post("/channels", status_code=status.HTTP_201_CREATED)
    async def create_channel(data: TelegramChannelIn) -> ChannelOut:
        async with db.transaction() as session:
            channel = await service.create_channel(session, data, settings.telegram_api_base)
        return ChannelOut.of(channel)

    @router.get("/channels")
    async def list_channels() -> list[ChannelOut]:
        async with db.sessions() as session:
            return [ChannelOut.of(c) for c in await service.list_channels(session)]

    @router.get("/channels/{channel_id}")
    async def get_channel(channel_id: str) -> ChannelOut:
        async with db.sessions() as session:
            channel = await service.get_channel(session, channel_id)
        if channel is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown channel")
        return ChannelOut.of(channel)

    return router
