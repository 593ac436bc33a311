"""ingest: platform webhooks in, agents' replies out."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends

from libs.common.service import Runtime, Service, new_app, new_database
from services.ingest import api, service
from services.ingest.handlers import build_consumers
from services.ingest.models import Base
from services.ingest.telegram import TelegramBots

NAME = "ingest"


def build(runtime: Runtime) -> Service:
    db = new_database(runtime, NAME, Base.metadata, Path(__file__).parent)
    app = new_app(NAME, runtime, db.ping)
    inbound = service.inbound_commits(db)
    app.include_router(api.webhook_router(db, inbound))
    app.include_router(
        api.internal_router(db, runtime.settings), dependencies=[Depends(runtime.internal_auth())]
    )
    settings = runtime.settings
    bots = TelegramBots()
    policy = service.RetryPolicy(settings.delivery_attempts, settings.delivery_backoff_s)
    consumers = build_consumers(bots, policy)
    return Service(NAME, runtime, db, consumers, app, on_stop=[inbound.stop, bots.close])
