"""cases' operations: the "Create case" chat action's field rules."""

from __future__ import annotations

from itertools import takewhile

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.envelope import new_id, utcnow
from services.cases.models import Case, CaseFromChatIn

SUBJECT_MAX = 500


async def create_from_chat(session: AsyncSession, data: CaseFromChatIn) -> Case:
    """Subject: the first message; description: customer messages before the agent's first
    answer; source "Chat"; registered at the first message; status "New"."""
    existing = await session.scalar(select(Case).where(Case.chat_id == data.chat_id))
    if existing is not None:
        return existing
    # In the conversation's order, as chat lists them (the platform's, not arrival's).
    messages = list(data.messages)
    first = messages[0] if messages else None
    before_answer = takewhile(lambda m: m.direction == "in", messages)
    case = Case(
        id=new_id(),
        chat_id=data.chat_id,
        subject=((first.text if first else None) or "Chat")[:SUBJECT_MAX],
        description="\n".join(m.text for m in before_answer if m.text),
        source="Chat",
        status="New",
        registered_at=first.created_at if first else utcnow(),
        contact_id=data.contact_id,
        account_id=data.account_id,
        assignee_id=data.agent_id,
        created_at=utcnow(),
    )
    session.add(case)
    return case
