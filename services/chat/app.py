"""chat: chats, their messages and their lifecycle."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends

from libs.common.service import Runtime, Service, new_app, new_database
from services.chat import api
from services.chat.edits import PendingEdits
from services.chat.handlers import consumers
from services.chat.models import Base

NAME = "chat"


def build(runtime: Runtime) -> Service:
    db = new_database(runtime, NAME, Base.metadata, Path(__file__).parent)
    app = new_app(NAME, runtime, db.ping)
    app.include_router(api.internal_router(db), dependencies=[Depends(runtime.internal_auth())])
    pending_edits = PendingEdits(db)
    return Service(
        NAME,
        runtime,
        db,
        consumers,
        app,
        on_start=[pending_edits.start],
        on_stop=[pending_edits.stop],
    )
