"""ingest: platform webhooks in, agents' replies out."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends

from libs.common.service import Runtime, Service, new_app, new_database
from services.ingest import api, channels, service
from services.ingest.fetching import Fetcher
from services.ingest.handlers import build_consumers
from services.ingest.meta.files import FacebookFiles
from services.ingest.meta.graph import Graph
from services.ingest.meta.inbound import MetaInbound
from services.ingest.meta.profiles import Profiles
from services.ingest.meta.replies import FacebookSender
from services.ingest.models import Base, Channel
from services.ingest.sending import RetryPolicy
from services.ingest.telegram import TelegramBots, TelegramSender
from services.ingest.telegram_files import TelegramFiles
from services.ingest.telegram_inbound import TelegramInbound
from services.ingest.telegram_link import Links

NAME = "ingest"


def build(runtime: Runtime) -> Service:
    settings = runtime.settings
    db = new_database(runtime, NAME, Base.metadata, Path(__file__).parent)
    app = new_app(NAME, runtime, db.ping)
    blobs = runtime.blobs
    graph = Graph()
    bots = TelegramBots()
    policy = RetryPolicy(settings.delivery_attempts, settings.delivery_backoff_s)

    async def token_invalid(channel: Channel) -> None:
        await channels.set_channel_health(db, channel.id, "token_invalid")

    cache = channels.ChannelCache(db)
    profiles = Profiles(graph, token_invalid)
    fetcher = Fetcher(
        db,
        blobs,
        cache,
        {"telegram": TelegramFiles(bots), "facebook": FacebookFiles(graph, profiles)},
        policy,
        limit=settings.max_file_bytes,
    )
    inbound = service.inbound_commits(db, fetcher.wake)
    receipts = service.receipt_commits(db)
    meta = MetaInbound(cache, profiles, inbound, receipts)
    telegram_inbound = TelegramInbound(inbound)
    # Polls or watches each Telegram channel from one replica (see telegram_link.py).
    links = Links(db, bots, telegram_inbound, settings)
    app.include_router(api.webhook_router(cache, telegram_inbound, meta))
    app.include_router(
        api.internal_router(db, settings, graph, cache, links),
        dependencies=[Depends(runtime.internal_auth())],
    )
    consumers = build_consumers(
        {
            "telegram": TelegramSender(policy, bots, blobs),
            "facebook": FacebookSender(graph, db, policy, blobs),
        },
        fetcher,
    )
    return Service(
        NAME,
        runtime,
        db,
        consumers,
        app,
        on_start=[blobs.prepare, fetcher.start, links.start],
        # Links first: a poller may be handing updates to the inbound commit.
        on_stop=[links.stop, fetcher.stop, inbound.stop, receipts.stop, bots.close, graph.close],
    )
