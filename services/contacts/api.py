"""contacts' internal HTTP API, used by the gateway.

A merged contact answers 410 with `{"detail": {"message": ..., "survivor_id": ...}}`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from libs.common.db import Database
from services.contacts import duplicates, merge, rules, service
from services.contacts.details import ContactPatch
from services.contacts.models import ContactOut, DuplicateRule


@contextmanager
def _answers() -> Iterator[None]:
    """The operations' refusals as HTTP answers."""
    try:
        yield
    except service.Merged as exc:
        raise HTTPException(
            status.HTTP_410_GONE,
            {
                "message": "this contact was merged into another one",
                "survivor_id": exc.survivor_id,
            },
        ) from exc
    except merge.Refused as exc:
        raise HTTPException(exc.status, exc.detail) from exc


def _unknown() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "unknown contact")


def internal_router(db: Database) -> APIRouter:
    router = APIRouter(prefix="/internal")

    @router.get("/contacts/{contact_id}")
    async def get_contact(contact_id: str) -> ContactOut:
        with _answers():
            async with db.sessions() as session:
                contact = await service.get_contact(session, contact_id)
        if contact is None:
            raise _unknown()
        return contact

    @router.patch("/contacts/{contact_id}")
    async def update_contact(
        contact_id: str, patch: ContactPatch, by: str | None = None
    ) -> ContactOut:
        with _answers():
            async with db.transaction() as session:
                contact = await service.update_contact(session, contact_id, patch, by)
        if contact is None:
            raise _unknown()
        return contact

    @router.get("/contacts/{contact_id}/duplicates")
    async def get_duplicates(contact_id: str) -> duplicates.DuplicatesOut:
        with _answers():
            async with db.sessions() as session:
                contact = await service.get_contact(session, contact_id)
                if contact is None:
                    raise _unknown()
                return await duplicates.duplicates_of(session, contact)

    @router.post("/contacts/{contact_id}/merge")
    async def merge_contacts(contact_id: str, body: merge.MergeIn) -> merge.MergeOut:
        with _answers():
            async with db.transaction() as session:
                return await merge.merge(session, contact_id, body)

    @router.get("/contacts/{contact_id}/merges")
    async def list_merges(contact_id: str) -> list[merge.MergeOut]:
        with _answers():
            async with db.sessions() as session:
                if await service.live_contact(session, contact_id) is None:
                    raise _unknown()
                return await merge.merges_of(session, contact_id)

    @router.get("/duplicate-rules")
    async def list_rules() -> list[rules.RuleOut]:
        async with db.sessions() as session:
            return await rules.list_rules(session)

    async def name_taken(name: str | None, rule_id: str | None = None) -> None:
        if name is None:
            return
        async with db.sessions() as session:
            other = await session.scalar(select(DuplicateRule.id).where(DuplicateRule.name == name))
        if other is not None and other != rule_id:
            raise HTTPException(status.HTTP_409_CONFLICT, f"a rule named {name!r} exists")

    @router.post("/duplicate-rules", status_code=status.HTTP_201_CREATED)
    async def create_rule(body: rules.RuleIn, by: str | None = None) -> rules.RuleOut:
        await name_taken(body.name)
        try:
            async with db.transaction() as session:
                return await rules.create_rule(session, body, by)
        except IntegrityError as exc:  # created at the same moment
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"a rule named {body.name!r} exists"
            ) from exc

    @router.patch("/duplicate-rules/{rule_id}")
    async def update_rule(
        rule_id: str, body: rules.RulePatch, by: str | None = None
    ) -> rules.RuleOut:
        await name_taken(body.name, rule_id)
        try:
            async with db.transaction() as session:
                rule = await rules.update_rule(session, rule_id, body, by)
        except IntegrityError as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"a rule named {body.name!r} exists"
            ) from exc
        if rule is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown duplicate rule")
        return rule

    return router
