"""cases' internal HTTP API."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy.exc import IntegrityError

from libs.common.db import Database
from services.cases import service
from services.cases.models import Case, CaseFromChatIn, CaseOut


def internal_router(db: Database) -> APIRouter:
    router = APIRouter(prefix="/internal")

    @router.post("/cases/from-chat", status_code=status.HTTP_201_CREATED)
    async def create_from_chat(data: CaseFromChatIn) -> CaseOut:
        try:
            async with db.transaction() as session:
                return CaseOut.of(await service.create_from_chat(session, data))
        except IntegrityError:
            # The same chat's case was created concurrently: answer that one.
            async with db.transaction() as session:
                return CaseOut.of(await service.create_from_chat(session, data))

    @router.get("/cases/{case_id}")
    async def get_case(case_id: str) -> CaseOut:
        async with db.sessions() as session:
            case = await session.get(Case, case_id)
        if case is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown case")
        return CaseOut.of(case)

    return router
