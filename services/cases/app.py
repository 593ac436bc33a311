"""cases: service cases made from chats."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends

from libs.common.service import Runtime, Service, new_app, new_database
from services.cases import api
from services.cases.handlers import consumers
from services.cases.models import Base

NAME = "cases"


def build(runtime: Runtime) -> Service:
    db = new_database(runtime, NAME, Base.metadata, Path(__file__).parent)
    app = new_app(NAME, runtime, db.ping)
    app.include_router(api.internal_router(db), dependencies=[Depends(runtime.internal_auth())])
    return Service(NAME, runtime, db, consumers, app)
