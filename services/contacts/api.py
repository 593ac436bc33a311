"""contacts' internal HTTP API."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from libs.common.db import Database
from services.contacts import service
from services.contacts.models import ContactOut


def internal_router(db: Database) -> APIRouter:
    router = APIRouter(prefix="/internal")

    @router.get("/contacts/{contact_id}")
    async def get_contact(contact_id: str) -> ContactOut:
        async with db.sessions() as session:
            contact = await service.get_contact(session, contact_id)
        if contact is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown contact")
        return contact

    return router
