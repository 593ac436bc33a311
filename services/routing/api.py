"""routing's internal HTTP API, used by the gateway."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select

from libs.common.db import Database
from services.routing import service
from services.routing.models import (
    AcceptIn,
    AgentOut,
    Assignment,
    AssignmentOut,
    Queue,
    QueueIn,
    QueueOut,
    StatusIn,
)


def internal_router(db: Database) -> APIRouter:
    router = APIRouter(prefix="/internal")

    @router.post("/queues", status_code=status.HTTP_201_CREATED)
    async def create_queue(data: QueueIn) -> QueueOut:
        async with db.sessions() as session:
            if await session.scalar(select(Queue.id).where(Queue.name == data.name)):
                raise HTTPException(status.HTTP_409_CONFLICT, f"a queue named {data.name!r} exists")
        async with db.transaction() as session:
            return await service.create_queue(session, data)

    @router.get("/queues")
    async def list_queues() -> list[QueueOut]:
        async with db.sessions() as session:
            queues = await session.scalars(select(Queue).order_by(Queue.name))
            return [await service.queue_out(session, q) for q in queues]

    @router.get("/queues/{queue_id}")
    async def get_queue(queue_id: str) -> QueueOut:
        async with db.sessions() as session:
            queue = await session.get(Queue, queue_id)
            if queue is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown queue")
            return await service.queue_out(session, queue)

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

    @router.get("/assignments")
    async def list_assignments(
        agent_id: str, state: Literal["offered", "assigned"]
    ) -> list[AssignmentOut]:
        async with db.sessions() as session:
            rows = await service.assignments_of(session, agent_id, state)
        return [AssignmentOut.of(a) for a in rows]

    @router.get("/contacts/{contact_id}/assignments")
    async def list_contact_assignments(contact_id: str, agent_id: str) -> list[AssignmentOut]:
        """Whether an agent may see a contact: the contact's chats they were given."""
        async with db.sessions() as session:
            rows = await service.assignments_of_contact(session, contact_id, agent_id)
        return [AssignmentOut.of(a) for a in rows]

    @router.get("/assignments/{chat_id}")
    async def get_assignment(chat_id: str) -> AssignmentOut:
        async with db.sessions() as session:
            assignment = await session.get(Assignment, chat_id)
        if assignment is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "chat not known to routing yet")
        return AssignmentOut.of(assignment)

    @router.post("/assignments/{chat_id}/accept")
    async def accept(chat_id: str, body: AcceptIn) -> AssignmentOut:
        try:
            async with db.transaction() as session:
                assignment = await service.accept(session, chat_id, body.agent_id)
        except service.NotOffered as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT, "the chat is not offered to this agent"
            ) from exc
        return AssignmentOut.of(assignment)

    return router
