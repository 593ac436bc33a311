"""Agent accounts: passwords (argon2), bearer tokens, the first administrator."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import Database
from libs.common.envelope import new_id, utcnow
from libs.common.settings import Settings
from services.gateway.models import AccessToken, Agent, AgentIn, AgentPatch

log = logging.getLogger(__name__)
hasher = PasswordHasher()
_DUMMY_HASH = hasher.hash("no such agent")


class UsernameTaken(Exception):
    pass


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_agent(db: Database, data: AgentIn) -> Agent:
    password_hash = await asyncio.to_thread(hasher.hash, data.password)
    agent = Agent(
        id=new_id(),
        username=data.username,
        password_hash=password_hash,
        display_name=data.display_name,
        role=data.role,
        created_at=utcnow(),
    )
    try:
        async with db.transaction() as session:
            session.add(agent)
    except IntegrityError as exc:
        raise UsernameTaken(data.username) from exc
    return agent


async def update_agent(db: Database, agent_id: str, data: AgentPatch) -> Agent | None:
    """Apply a supervisor's changes; deactivating ends the agent's sessions."""
    changes = data.model_dump(exclude_none=True)
    password = changes.pop("password", None)
    password_hash = await asyncio.to_thread(hasher.hash, password) if password else None
    async with db.transaction() as session:
        agent = await session.get(Agent, agent_id)
        if agent is None:
            return None
        for field, value in changes.items():
            setattr(agent, field, value)
        if password_hash is not None:
            agent.password_hash = password_hash
        if data.active is False:
            await session.execute(delete(AccessToken).where(AccessToken.agent_id == agent_id))
    return agent


async def check_password(session: AsyncSession, username: str, password: str) -> Agent | None:
    agent = await session.scalar(select(Agent).where(Agent.username == username))
    try:
        # An unknown name is checked against a dummy hash: the answer takes as long either way,
        # so timing does not tell which usernames exist.
        await asyncio.to_thread(
            hasher.verify, agent.password_hash if agent else _DUMMY_HASH, password
        )
    except VerificationError:
        return None
    return agent


async def issue_token(
    session: AsyncSession, agent: Agent, ttl: timedelta
) -> tuple[str, AccessToken]:
    token = secrets.token_urlsafe(32)
    row = AccessToken(token_hash=_token_hash(token), agent_id=agent.id, expires_at=utcnow() + ttl)
    session.add(row)
    return token, row


async def agent_for_token(session: AsyncSession, token: str) -> Agent | None:
    row = await session.get(AccessToken, _token_hash(token))
    if row is None or row.expires_at.timestamp() < utcnow().timestamp():
        return None
    agent = await session.get(Agent, row.agent_id)
    return agent if agent is not None and agent.active else None


async def revoke_token(session: AsyncSession, token: str) -> None:
    await session.execute(delete(AccessToken).where(AccessToken.token_hash == _token_hash(token)))


async def ensure_admin(db: Database, settings: Settings) -> None:
    """First start: create the `admin` supervisor when no agent exists."""
    async with db.sessions() as session:
        if await session.scalar(select(func.count()).select_from(Agent)):
            return
    if settings.admin_password is not None:
        password = settings.admin_password.get_secret_value()
    elif settings.embedded:
        # Trying chatdesk out: make a password and leave it where only this user can read it.
        password = secrets.token_urlsafe(12)
        path = settings.data_path / "admin-password"
        path.write_text(password + "\n")
        os.chmod(path, 0o600)
        log.warning("created the admin account; its password is in %s", path)
    else:
        raise SystemExit(
            "No agent exists yet: set CHATDESK_ADMIN_PASSWORD to create the `admin` supervisor."
        )
    admin = AgentIn(
        username="admin", password=password, display_name="Administrator", role="supervisor"
    )
    with contextlib.suppress(UsernameTaken):  # another gateway replica made it first
        await create_agent(db, admin)
