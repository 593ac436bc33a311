"""routing's internal HTTP API, used by the gateway."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import ValidationError
from sqlalchemy import select

from libs.common.db import Database
from services.routing import service
from services.routing.models import (
    AcceptIn,
    AgentOut,
    Assignment,
    AssignmentOut,
    PresenceIn,
    Queue,
    QueueIn,
    QueueOut,
    QueuePatch,
    StatusIn,
    TransferIn,
)


def _unknown_overflow(exc: service.UnknownQueue) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown overflow queue id {exc.args[0]!r}"
    )


def internal_router(db: Database) -> APIRouter:
    router = APIRouter(prefix="/internal")

    async def name_free(name: str, queue_id: str | None = None) -> None:
        async with db.sessions() as session:
            holder = await session.scalar(select(Queue.id).where(Queue.name == name))
        if holder is not None and holder != queue_id:
            raise HTTPException(status.HTTP_409_CONFLICT, f"a queue named {name!r} exists")

    @router.post("/queues", status_code=status.HTTP_201_CREATED)
    async def create_queue(data: QueueIn) -> QueueOut:
        await name_free(data.name)
        try:
            async with db.transaction() as session:
                return await service.create_queue(session, data)
        except service.UnknownQueue as exc:
            raise _unknown_overflow(exc) from exc

    @router.patch("/queues/{queue_id}")
    async def update_queue(queue_id: str, patch: QueuePatch) -> QueueOut:
        if patch.name is not None:
            await name_free(patch.name, queue_id)
        try:
            async with db.transaction() as session:
                return await service.update_queue(session, queue_id, patch)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors) from exc
        except service.UnknownQueue as exc:
            if exc.args[0] == queue_id:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown queue") from exc
            raise _unknown_overflow(exc) from exc

    @router.get("/queues")
    async def list_queues() -> list[QueueOut]:
        async with db.sessions() as session:
            ids = await session.scalars(select(Queue.id).order_by(Queue.name))
            return [await service.queue_out(session, q) for q in ids]

    @router.get("/queues/{queue_id}")
    async def get_queue(queue_id: str) -> QueueOut:
        async with db.sessions() as session:
            if await session.get(Queue, queue_id) is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown queue")
            return await service.queue_out(session, queue_id)

    @router.get("/agents")
    async def list_agents() -> list[AgentOut]:
        async with db.sessions() as session:
            return [AgentOut(id=a.id, status=a.status) for a in await service.agents(session)]

    @router.get("/agents/{agent_id}")
    async def get_agent(agent_id: str) -> AgentOut:
        async with db.transaction() as session:
            agent = await service.ensure_agent(session, agent_id)
        return AgentOut(id=agent.id, status=agent.status)

    @router.put("/agents/{agent_id}/status")
    async def set_status(agent_id: str, body: StatusIn) -> AgentOut:
        async with db.transaction() as session:
            agent = await service.set_status(session, agent_id, body.status)
        return AgentOut(id=agent.id, status=agent.status)

    @router.post("/agents/{agent_id}/login")
    async def login(agent_id: str) -> AgentOut:
        async with db.transaction() as session:
            agent = await service.login(session, agent_id)
        return AgentOut(id=agent.id, status=agent.status)

    @router.post("/agents/{agent_id}/logout")
    async def logout(agent_id: str) -> AgentOut:
        async with db.transaction() as session:
            agent = await service.logout(session, agent_id)
        return AgentOut(id=agent.id, status=agent.status)

    @router.put("/presence", status_code=status.HTTP_204_NO_CONTENT)
    async def consoles_open(body: PresenceIn) -> None:
        """A gateway's report of the agents with a console open on it (every third of the
        disconnect grace period, and at each connection)."""
        async with db.transaction() as session:
            returning = await service.consoles_seen(session, body.agent_ids)
        for agent_id in returning:
            async with db.transaction() as session:
                await service.reconnect(session, agent_id)

    @router.get("/assignments")
    async def list_assignments(
        agent_id: str, state: Literal["offered", "assigned"]
    ) -> list[AssignmentOut]:
        async with db.sessions() as session:
            return await service.assignments_of(session, agent_id, state)

    @router.get("/contacts/{contact_id}/assignments")
    async def list_contact_assignments(contact_id: str, agent_id: str) -> list[AssignmentOut]:
        """Whether an agent may see a contact: the contact's chats they were given."""
        async with db.sessions() as session:
            return await service.assignments_of_contact(session, contact_id, agent_id)

    @router.get("/assignments/{chat_id}")
    async def get_assignment(chat_id: str, agent_id: str | None = None) -> AssignmentOut:
        async with db.sessions() as session:
            assignment = await session.get(Assignment, chat_id)
            if assignment is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "chat not known to routing yet")
            return await service.assignment_out(session, assignment, agent_id)

    @router.post("/assignments/{chat_id}/accept")
    async def accept(chat_id: str, body: AcceptIn) -> AssignmentOut:
        try:
            async with db.transaction() as session:
                assignment = await service.accept(session, chat_id, body.agent_id)
                return await service.assignment_out(session, assignment, body.agent_id)
        except service.NotOffered as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT, "the chat is not offered to this agent"
            ) from exc

    @router.post("/assignments/{chat_id}/transfer")
    async def transfer(chat_id: str, body: TransferIn) -> AssignmentOut:
        try:
            async with db.transaction() as session:
                assignment = await service.transfer(
                    session, chat_id, body.by, to_agent=body.agent_id, to_queue=body.queue_id
                )
                return await service.assignment_out(session, assignment, body.by)
        except service.UnknownQueue as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown queue id {exc.args[0]!r}"
            ) from exc
        except service.CannotTransfer as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc

    return router
