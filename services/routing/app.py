"""routing: queues, agent status, offers and assignments, and their timers."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends

from libs.common.service import Runtime, Service, new_app, new_database
from services.routing import api
from services.routing.clock import Clock
from services.routing.handlers import consumers
from services.routing.models import Base

NAME = "routing"


def build(runtime: Runtime) -> Service:
    settings = runtime.settings
    db = new_database(runtime, NAME, Base.metadata, Path(__file__).parent)
    app = new_app(NAME, runtime, db.ping)
    app.include_router(api.internal_router(db), dependencies=[Depends(runtime.internal_auth())])
    clock = Clock(db, tick_s=settings.routing_tick_s, grace_s=settings.presence_grace_s)
    return Service(NAME, runtime, db, consumers, app, on_start=[clock.start], on_stop=[clock.stop])
