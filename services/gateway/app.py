"""gateway: the console's REST API and WebSocket, its accounts, and the console itself."""

from __future__ import annotations

from pathlib import Path

from libs.common.handlers import Consumers
from libs.common.service import Runtime, Service, new_app, new_database
from services.gateway import api, auth, push, web, ws
from services.gateway.models import Base
from services.gateway.peers import Peers
from services.gateway.presence import Presence

NAME = "gateway"


def build(runtime: Runtime) -> Service:
    db = new_database(runtime, NAME, Base.metadata, Path(__file__).parent)
    hub = push.Hub()
    consumers = Consumers(NAME)
    push.register(consumers, hub)
    app = new_app(NAME, runtime, db.ping, api_prefix="/api")
    peers = Peers(runtime)
    presence = Presence(peers, hub, runtime.settings.presence_grace_s)
    app.include_router(api.build_router(db, peers, runtime.settings, runtime.blobs))
    app.include_router(ws.build_router(db, hub, presence))
    app.mount("/", web.console_files(), name="console")  # last: the API's routes come first

    async def create_first_admin() -> None:
        await auth.ensure_admin(db, runtime.settings)

    return Service(
        NAME,
        runtime,
        db,
        consumers,
        app,
        on_start=[runtime.blobs.prepare, create_first_admin, presence.start],
        on_stop=[presence.stop],
    )
