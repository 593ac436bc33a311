"""The console's contact API under /api/contacts, and duplicate rules under /api/admin.

Who may do what: supervisors, anything. An agent reads a contact (details, picture, duplicates,
merges, timeline) if routing ever gave them one of its chats (offered or assigned, closed ones
too: `accessible_contact`), and changes it (edit, merge its duplicates into it) while owning
one of its chats (accepted, not completed); a contact they may read but not change answers 409,
any other contact 404, as other agents' chats do. A merged contact answers 410 with
`survivor_id` to whoever may read it or its survivor.

The request bodies are checked here for shape; contacts checks the rest (phones, e-mails,
rule conditions) and its 422 answers pass through. No `from __future__ import annotations`:
FastAPI must see the `Annotated` dependencies as objects.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, NoReturn
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from libs.common.blobs import BlobStore
from services.gateway import files
from services.gateway.models import Agent
from services.gateway.peers import Peers


class ContactPatchIn(BaseModel):
    """New details; fields left out stay as they are. `phones` and `emails` replace the lists
    (numbers keep their digits and a leading +; addresses are lowercased); `account: null`
    clears the account."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=300)
    phones: list[str] | None = Field(default=None, max_length=20)
    emails: list[str] | None = Field(default=None, max_length=20)
    account: str | None = Field(default=None, max_length=200)


class MergeIn(BaseModel):
    """Contacts to merge into this one, which survives."""

    model_config = ConfigDict(extra="forbid")

    duplicate_ids: list[str] = Field(min_length=1, max_length=20)


class ConditionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: Literal["name", "phone", "email", "account"]
    match: Literal["similar", "exact"] = Field(
        description="`similar` (names only): similarity 0-100 at least `threshold`; `exact`: "
        "the same normalized name, a phone or e-mail in common, the same account."
    )
    threshold: int | None = Field(default=None, description="70-100, for `similar` only.")


class RuleIn(BaseModel):
    """A duplicate rule: all its conditions must hold. It needs a name, phone or e-mail
    condition; each field at most once."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    conditions: list[ConditionIn] = Field(min_length=1, max_length=4)
    active: bool = True


class RulePatch(BaseModel):
    """Fields left out stay as they are: `{"active": false}` deactivates the rule."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    conditions: list[ConditionIn] | None = Field(default=None, min_length=1, max_length=4)
    active: bool | None = None


def _path(contact_id: str, rest: str = "") -> str:
    return f"/internal/contacts/{quote(contact_id, safe='')}{rest}"


def public(contact: dict[str, Any]) -> dict[str, Any]:
    """A contact as the console sees it: `picture_url` where its profile picture is (if it has
    one) instead of where the blob store keeps it."""
    picture = contact.pop("picture", None)
    contact["picture_url"] = f"/api/contacts/{contact['id']}/picture" if picture else None
    return contact


def add_routes(
    router: APIRouter,
    peers: Peers,
    blobs: BlobStore,
    current_agent: Callable[..., Awaitable[Agent]],
    supervisor: Callable[..., Awaitable[Agent]],
) -> None:
    CurrentAgent = Annotated[Agent, Depends(current_agent)]
    Supervisor = Annotated[Agent, Depends(supervisor)]

    async def given(agent: Agent, contact_id: str) -> bool:
        """Whether routing ever gave this agent one of the contact's chats."""
        if agent.role == "supervisor":
            return True
        assignments = await peers.get(
            "routing", _path(contact_id, "/assignments"), params={"agent_id": agent.id}
        )
        return bool(assignments)

    async def owned_contacts(agent: Agent) -> set[str]:
        """The contacts of the chats this agent owns (accepted, not completed)."""
        assignments = await peers.get(
            "routing", "/internal/assignments", params={"agent_id": agent.id, "state": "assigned"}
        )
        chat_ids = [a["chat_id"] for a in assignments]
        if not chat_ids:
            return set()
        chats = await peers.get("chat", "/internal/chats", params={"ids": ",".join(chat_ids)})
        return {c["contact_id"] for c in chats}

    async def refuse(agent: Agent, contact_id: str, *, readable: bool) -> NoReturn:
        """The answer for a contact this agent may not have as asked: 410 if it was merged and
        they may read it or its survivor, 409 if they may read but not change it, else 404."""
        try:
            await peers.get("contacts", _path(contact_id))
        except HTTPException as exc:
            if exc.status_code != status.HTTP_410_GONE:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown contact") from exc
            detail: dict[str, Any] = exc.detail if isinstance(exc.detail, dict) else {}
            survivor = detail.get("survivor_id")
            if readable or (survivor and await given(agent, survivor)):
                raise
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown contact") from exc
        if readable:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "accept the chat first: only the owner of one of its chats can do this",
            )
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown contact")

    async def accessible_contact(agent: Agent, contact_id: str) -> dict[str, Any]:
        """The contact, if this agent may read it (404 otherwise, as for chats)."""
        if not await given(agent, contact_id):
            await refuse(agent, contact_id, readable=False)
        contact: dict[str, Any] = await peers.get("contacts", _path(contact_id))
        return contact

    async def guard(agent: Agent, contact_id: str, *, change: bool = False) -> None:
        if not change:
            await accessible_contact(agent, contact_id)
        elif agent.role != "supervisor" and contact_id not in await owned_contacts(agent):
            await refuse(agent, contact_id, readable=await given(agent, contact_id))

    @router.get("/contacts/{contact_id}", tags=["contacts"])
    async def get_contact(agent: CurrentAgent, contact_id: str) -> dict[str, Any]:
        """The contact: name, phones, e-mails, account, identities; `picture_url` is where its
        profile picture is, if it has one."""
        return public(await accessible_contact(agent, contact_id))

    @router.get("/contacts/{contact_id}/picture", tags=["contacts"], responses=files.FILE_RESPONSES)
    async def get_contact_picture(agent: CurrentAgent, contact_id: str) -> Response:
        contact = await accessible_contact(agent, contact_id)
        picture = contact.get("picture")
        blob = await blobs.get(picture["blob_key"]) if picture else None
        if picture is None or blob is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "the contact has no picture")
        return files.file_response(blob, picture["content_type"], blob.name)

    @router.patch("/contacts/{contact_id}", tags=["contacts"])
    async def update_contact(
        agent: CurrentAgent, contact_id: str, body: ContactPatchIn
    ) -> dict[str, Any]:
        """Edit the contact's details."""
        await guard(agent, contact_id, change=True)
        contact: dict[str, Any] = await peers.call(
            "contacts",
            "PATCH",
            _path(contact_id),
            params={"by": agent.id},
            json=body.model_dump(exclude_unset=True),
        )
        return public(contact)

    @router.get("/contacts/{contact_id}/duplicates", tags=["contacts"])
    async def get_duplicates(agent: CurrentAgent, contact_id: str) -> dict[str, Any]:
        """The contact ("current") and its possible duplicates, best first, each with its
        score and the rule that matched: the result of the search made for the contact's
        newest chat, less contacts merged since."""
        await guard(agent, contact_id)
        found: dict[str, Any] = await peers.get("contacts", _path(contact_id, "/duplicates"))
        public(found["current"])
        for candidate in found["candidates"]:
            public(candidate["contact"])
        return found

    @router.post("/contacts/{contact_id}/merge", tags=["contacts"])
    async def merge_contacts(agent: CurrentAgent, contact_id: str, body: MergeIn) -> dict[str, Any]:
        """Merge `duplicate_ids` into this contact, which survives with their identities,
        chats, cases and the details it lacked. Asking again is harmless."""
        await guard(agent, contact_id, change=True)
        merged: dict[str, Any] = await peers.post(
            "contacts",
            _path(contact_id, "/merge"),
            {"duplicate_ids": body.duplicate_ids, "merged_by": agent.id},
        )
        public(merged["survivor"])
        return merged

    @router.get("/contacts/{contact_id}/merges", tags=["contacts"])
    async def list_merges(agent: CurrentAgent, contact_id: str) -> list[dict[str, Any]]:
        """The merges this contact survived, newest first: who, when, what moved."""
        await guard(agent, contact_id)
        merges: list[dict[str, Any]] = await peers.get("contacts", _path(contact_id, "/merges"))
        for merge in merges:
            public(merge["survivor"])
        return merges

    @router.get("/contacts/{contact_id}/timeline", tags=["contacts"])
    async def timeline(
        agent: CurrentAgent,
        contact_id: str,
        before: Annotated[
            datetime | None, Query(description="Chats opened before this: the next page.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> list[dict[str, Any]]:
        """The contact's chats, newest first, each with its messages (files included) in the
        platform's order."""
        await guard(agent, contact_id)  # 404 or 410 before anything else
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before.isoformat()
        chats: list[dict[str, Any]] = await peers.get(
            "chat", f"/internal/contacts/{quote(contact_id, safe='')}/timeline", params=params
        )
        return chats

    @router.get("/admin/duplicate-rules", tags=["admin"])
    async def list_rules(_: Supervisor) -> list[dict[str, Any]]:
        """Every duplicate rule, active or not."""
        rules: list[dict[str, Any]] = await peers.get("contacts", "/internal/duplicate-rules")
        return rules

    @router.post("/admin/duplicate-rules", tags=["admin"], status_code=status.HTTP_201_CREATED)
    async def create_rule(agent: Supervisor, body: RuleIn) -> dict[str, Any]:
        rule: dict[str, Any] = await peers.call(
            "contacts",
            "POST",
            "/internal/duplicate-rules",
            params={"by": agent.id},
            json=body.model_dump(exclude_none=True),
        )
        return rule

    @router.patch("/admin/duplicate-rules/{rule_id}", tags=["admin"])
    async def update_rule(agent: Supervisor, rule_id: str, body: RulePatch) -> dict[str, Any]:
        """Rename, change the conditions of, activate or deactivate a rule."""
        patch = body.model_dump(exclude_unset=True)
        if patch.get("conditions"):
            patch["conditions"] = [
                {k: v for k, v in c.items() if v is not None} for c in patch["conditions"]
            ]
        rule: dict[str, Any] = await peers.call(
            "contacts",
            "PATCH",
            f"/internal/duplicate-rules/{quote(rule_id, safe='')}",
            params={"by": agent.id},
            json=patch,
        )
        return rule
