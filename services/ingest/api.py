"""ingest's HTTP: the platform webhooks (public) and the channel admin API (internal)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from aiogram.types import Update
from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import PlainTextResponse, Response
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from libs.common.db import Database
from libs.common.settings import Settings
from services.ingest import channels
from services.ingest.meta import signature, webhook
from services.ingest.meta.graph import Graph
from services.ingest.meta.inbound import MetaInbound
from services.ingest.models import Channel, ChannelIn, ChannelOut, ChannelPatch
from services.ingest.telegram_inbound import TelegramInbound
from services.ingest.telegram_link import Links

MAX_CHALLENGE = 256


def webhook_router(
    cache: channels.ChannelCache, telegram: TelegramInbound, meta: MetaInbound
) -> APIRouter:
    router = APIRouter(prefix="/webhooks")

    async def channel_of(kind: str, channel_id: str) -> Channel:
        channel = await cache.get(channel_id)
        if channel is None or channel.kind != kind:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown channel")
        if not channel.active:
            # Gone, not failing: nothing posted here is taken until the channel is reactivated.
            raise HTTPException(status.HTTP_410_GONE, "the channel is deactivated")
        return channel

    # The two webhooks that every customer message comes through are plain Starlette routes
    # (whose path `add_route` does not prefix): FastAPI's dependency solving and response
    # serialization cost more than their own work.
    async def telegram_webhook(request: Request) -> Response:
        channel = await channel_of("telegram", request.path_params["channel_id"])
        secret = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
        if not channels.secret_matches(channel.secret, secret):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "bad or missing secret token")
        try:
            update = Update.model_validate(_json(await request.body()))
        except ValidationError as exc:
            raise _malformed("not a Telegram Update", exc) from exc
        await telegram.accept(channel, [update])
        return _ok()

    router.add_route(f"{router.prefix}/telegram/{{channel_id}}", telegram_webhook, methods=["POST"])

    @router.get("/facebook/{channel_id}", response_class=PlainTextResponse)
    async def facebook_handshake(
        channel_id: str,
        mode: Annotated[str | None, Query(alias="hub.mode")] = None,
        verify_token: Annotated[str | None, Query(alias="hub.verify_token")] = None,
        challenge: Annotated[str | None, Query(alias="hub.challenge")] = None,
    ) -> PlainTextResponse:
        """Meta's subscription check: echo the challenge if the verify token is ours."""
        channel = await channel_of("facebook", channel_id)
        if mode != "subscribe" or not channels.secret_matches(channel.verify_token, verify_token):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "hub.mode or hub.verify_token is wrong")
        if not challenge or len(challenge) > MAX_CHALLENGE:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "hub.challenge missing or too long")
        return PlainTextResponse(challenge)

    async def facebook_webhook(request: Request) -> Response:
        channel = await channel_of("facebook", request.path_params["channel_id"])
        hub_signature = request.headers.get(signature.HEADER)
        body = await request.body()
        if not signature.signature_matches(channel.secret, body, hub_signature):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"bad or missing {signature.HEADER}")
        try:
            envelope = webhook.Envelope.model_validate(_json(body))
            parse = webhook.PARSERS.get(envelope.object)
            items = parse(envelope.entry) if parse is not None else []
        except ValidationError as exc:
            raise _malformed("not a Meta webhook", exc) from exc
        await meta.accept(channel, items)
        return _ok()

    router.add_route(f"{router.prefix}/facebook/{{channel_id}}", facebook_webhook, methods=["POST"])
    return router


def _ok() -> Response:
    return Response(b'{"ok":true}', media_type="application/json")


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"body is not JSON: {exc}") from exc


def _malformed(what: str, exc: ValidationError) -> HTTPException:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return HTTPException(status.HTTP_400_BAD_REQUEST, {"message": what, "errors": errors})


def internal_router(
    db: Database,
    settings: Settings,
    graph: Graph,
    cache: channels.ChannelCache,
    links: Links,
) -> APIRouter:
    router = APIRouter(prefix="/internal")

    async def reread(channel_id: str) -> Channel:
        async with db.sessions() as session:
            channel = await channels.get_channel(session, channel_id)
        if channel is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown channel")
        return channel

    @router.post("/channels", status_code=status.HTTP_201_CREATED)
    async def create_channel(data: ChannelIn) -> ChannelOut:
        try:
            account = await channels.check_new_channel(graph, data, settings)
            async with db.transaction() as session:
                channel = await channels.create_channel(session, data, settings, account)
        except channels.ChannelRefused as exc:
            raise HTTPException(exc.status, exc.detail) from exc
        except IntegrityError as exc:  # a concurrent request took the page or bot first
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"the {data.kind} account already has a channel"
            ) from exc
        if channel.kind == "telegram":
            await links.relink(channel)
            channel = await reread(channel.id)
        return ChannelOut.of(channel)

    @router.get("/channels")
    async def list_channels() -> list[ChannelOut]:
        async with db.sessions() as session:
            return [ChannelOut.of(c) for c in await channels.list_channels(session)]

    @router.get("/channels/{channel_id}")
    async def get_channel(channel_id: str) -> ChannelOut:
        return ChannelOut.of(await reread(channel_id))

    @router.patch("/channels/{channel_id}")
    async def update_channel(channel_id: str, patch: ChannelPatch) -> ChannelOut:
        current = await reread(channel_id)
        try:
            await channels.check_patch(graph, current, patch)
        except channels.ChannelRefused as exc:
            raise HTTPException(exc.status, exc.detail) from exc
        async with db.transaction() as session:
            channel = await channels.get_channel(session, channel_id)
            if channel is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown channel")
            channels.apply_patch(channel, patch)
        cache.forget(channel)
        if channel.kind == "telegram":
            if channels.relinks_telegram(patch):
                await links.relink(channel)
            else:
                links.wake()  # deactivated: its poller stops now, not at the next round
            channel = await reread(channel_id)
        return ChannelOut.of(channel)

    @router.delete("/channels/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def delete_channel(channel_id: str) -> None:
        """Only for a channel without chats: the gateway asks chat first. A channel with chats
        is deactivated instead, so its history keeps its channel."""
        channel = await reread(channel_id)
        if channel.kind == "telegram":
            await links.unlink(channel)
        async with db.transaction() as session:
            await channels.delete_channel(session, channel_id)
        cache.forget(channel)
        links.wake()

    return router
