"""The console's REST API under /api (the public contract in SPEC.md).

No `from __future__ import annotations` here: FastAPI must see the `Annotated` dependencies
defined inside `build_router` as objects, not strings.
"""

from datetime import timedelta
from typing import Annotated, Any, Literal, Self
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import select

from libs.common.blobs import BlobStore
from libs.common.db import Database
from libs.common.settings import Settings
from services.gateway import auth, contacts, files
from services.gateway.models import (
    Agent,
    AgentIn,
    AgentOut,
    AgentPatch,
    ChannelSummary,
    ChatAction,
    ChatView,
    LoginIn,
    LoginOut,
    MeOut,
    StatusIn,
    TextMessageIn,
)
from services.gateway.peers import Peers

bearer = HTTPBearer(auto_error=False)

ACTIONS = [
    ChatAction(code="complete", title="Complete chat"),
    ChatAction(code="transfer", title="Transfer chat"),
    ChatAction(code="create_case", title="Create case"),
]

RoutingRule = Literal["least_busy", "round_robin", "everyone"]


class QueuePatch(BaseModel):
    """A queue's options, each optional in a `PATCH`. Routing checks them as a whole and
    answers 422 with what is wrong."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    agent_ids: list[str] | None = Field(default=None, description="The queue's members.")
    routing_rule: RoutingRule | None = Field(
        default=None,
        description="least_busy (default): the agent with the fewest open chats, then the "
        "longest since they last accepted one; round_robin: members in turn; everyone: offered "
        "to every available member at once, the first to accept wins (such offers do not "
        "expire).",
    )
    capacity: int | None = Field(default=None, description="Max open chats per agent (5).")
    accept_timeout_s: int | None = Field(
        default=None, description="An offer not accepted within it goes to the next agent (60)."
    )
    reply_timeout_s: int | None = Field(
        default=None,
        description="A customer waiting longer for an answer raises chat.reply_overdue (300).",
    )
    reoffer_overdue: bool | None = Field(
        default=None, description="Take an overdue chat from its owner and offer it again."
    )
    auto_complete_after_s: int | None = Field(
        default=None, description="Complete a chat whose customer is silent this long."
    )
    max_wait_s: int | None = Field(
        default=None, description="Longest a chat may wait to be accepted; then on_max_wait."
    )
    on_max_wait: Literal["complete", "move"] | None = Field(
        default=None, description="complete the chat, or move it to overflow_queue_id."
    )
    overflow_queue_id: str | None = None


class QueueIn(QueuePatch):
    name: str
    agent_ids: list[str] = Field(default_factory=list, description="The queue's members.")


class TransferIn(BaseModel):
    """Give either `agent_id` (the agent owns the chat at once) or `queue_id` (the chat waits
    there for an offer, and does not go straight back to its owner)."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str | None = None
    queue_id: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.agent_id is None) == (self.queue_id is None):
            raise ValueError("give either agent_id or queue_id")
        return self


class TelegramChannelIn(BaseModel):
    kind: Literal["telegram"]
    name: str
    queue_id: str
    token: str = Field(description="Bot token from @BotFather.")
    secret: str = Field(description="Telegram sends it back in X-Telegram-Bot-Api-Secret-Token.")
    api_base: str | None = Field(default=None, description="Bot API server; Telegram's default.")


class FacebookChannelIn(BaseModel):
    kind: Literal["facebook"]
    name: str
    queue_id: str
    page_id: str = Field(description="The Facebook page's numeric id.")
    page_token: str = Field(description="A page access token with pages_messaging.")
    app_secret: str = Field(description="The Meta app's secret; it signs the webhooks.")
    verify_token: str = Field(description="Meta's webhook setup sends it as hub.verify_token.")
    human_agent_tag: bool = Field(
        default=False,
        description="Send replies the 24-hour window refuses again tagged HUMAN_AGENT (up to 7 "
        "days after the customer's last message). Needs Meta's Human Agent permission.",
    )
    api_base: str | None = Field(
        default=None, description="Graph API base with its version; Meta's default."
    )


# Checked in full by ingest, which answers 422 with the reason; secrets are never echoed back.
ChannelIn = Annotated[TelegramChannelIn | FacebookChannelIn, Body(discriminator="kind")]


class ChannelPatch(BaseModel):
    """New settings for a channel, each optional: a Telegram channel takes `name`, `token`,
    `secret`; a Facebook channel `name`, `page_token`, `app_secret`, `verify_token`,
    `human_agent_tag`; both take `active`. A new token clears the channel's `token_invalid`
    status. `active: false` deactivates the channel: its webhook answers 410 and it sends
    nothing. On a Telegram channel, a new token or secret, or `active: true`, registers the
    webhook again (in webhook mode), which is also how to retry one that failed."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    token: str | None = None
    secret: str | None = None
    page_token: str | None = None
    app_secret: str | None = None
    verify_token: str | None = None
    human_agent_tag: bool | None = None
    active: bool | None = None


def agent_out(agent: Agent) -> AgentOut:
    return AgentOut(
        id=agent.id,
        username=agent.username,
        display_name=agent.display_name,
        role=agent.role,
        active=agent.active,
    )


# The reply's two forms, for the OpenAPI schema (the view reads the body itself).
REPLY_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": TextMessageIn.model_json_schema()},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "caption": {"type": "string", "maxLength": files.MAX_CAPTION},
                },
            }
        },
    },
}


def build_router(db: Database, peers: Peers, settings: Settings, blobs: BlobStore) -> APIRouter:
    router = APIRouter(prefix="/api")

    async def current_agent(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Agent:
        if credentials is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token")
        async with db.sessions() as session:
            agent = await auth.agent_for_token(session, credentials.credentials)
        if agent is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or expired token")
        return agent

    CurrentAgent = Annotated[Agent, Depends(current_agent)]

    async def supervisor(agent: CurrentAgent) -> Agent:
        if agent.role != "supervisor":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "supervisors only")
        return agent

    Supervisor = Annotated[Agent, Depends(supervisor)]

    async def me_out(agent: Agent) -> MeOut:
        routing = await peers.get("routing", f"/internal/agents/{agent.id}")
        return MeOut(**agent_out(agent).model_dump(), status=routing["status"])

    def chat_view(chat: dict[str, Any], assignment: dict[str, Any] | None) -> ChatView:
        """Routing is the authority on who holds an open chat; chat on whether it is over."""
        if assignment is not None and chat["status"] != "completed":
            chat = {
                **chat,
                "queue_id": assignment["queue_id"],
                "agent_id": assignment["agent_id"],
                "status": "active" if assignment["state"] == "assigned" else "new",
                "accepted_at": assignment["accepted_at"],
                "offered_at": assignment["offered_at"],
                "offer_expires_at": assignment["offer_expires_at"],
                "awaiting_reply_since": assignment["awaiting_reply_since"],
                "reply_due_at": assignment["reply_due_at"],
            }
        return ChatView.model_validate(chat)

    async def accessible_chat(
        agent: Agent, chat_id: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The chat and its assignment, if this agent may see it: a chat they own (or owned),
        or one offered to them; supervisors see every chat. 404 otherwise: no leaks."""
        assignment = await peers.find(
            "routing", f"/internal/assignments/{chat_id}", params={"agent_id": agent.id}
        )
        if agent.role != "supervisor" and (
            assignment is None
            or (assignment["agent_id"] != agent.id and agent.id not in assignment["offered_to"])
        ):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown chat")
        chat = await peers.get("chat", f"/internal/chats/{chat_id}")
        return chat, assignment

    async def owned_chat(agent: Agent, chat_id: str) -> dict[str, Any]:
        chat, assignment = await accessible_chat(agent, chat_id)
        if chat["status"] == "completed":
            raise HTTPException(status.HTTP_409_CONFLICT, "the chat is completed")
        owner = assignment is not None and assignment["state"] == "assigned"
        if not owner or assignment["agent_id"] != agent.id:  # type: ignore[index]
            raise HTTPException(
                status.HTTP_409_CONFLICT, "accept the chat first: only its owner can do this"
            )
        return chat

    # --- auth -------------------------------------------------------------------------------

    @router.post("/auth/login", tags=["auth"])
    async def login(body: LoginIn) -> LoginOut:
        async with db.sessions() as session:  # the slow hash check holds no write transaction
            agent = await auth.check_password(session, body.username, body.password)
        if agent is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong username or password")
        if not agent.active:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this account is deactivated")
        async with db.transaction() as session:
            token, row = await auth.issue_token(
                session, agent, timedelta(hours=settings.token_ttl_hours)
            )
        routing = await peers.post("routing", f"/internal/agents/{agent.id}/login")
        me = MeOut(**agent_out(agent).model_dump(), status=routing["status"])
        return LoginOut(access_token=token, expires_at=row.expires_at, agent=me)

    @router.post("/auth/logout", tags=["auth"], status_code=status.HTTP_204_NO_CONTENT)
    async def logout(
        agent: CurrentAgent,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        assert credentials is not None
        async with db.transaction() as session:
            await auth.revoke_token(session, credentials.credentials)
        await peers.post("routing", f"/internal/agents/{agent.id}/logout")

    @router.get("/me", tags=["agent"])
    async def me(agent: CurrentAgent) -> MeOut:
        return await me_out(agent)

    @router.put("/me/status", tags=["agent"])
    async def set_status(agent: CurrentAgent, body: StatusIn) -> MeOut:
        await peers.put("routing", f"/internal/agents/{agent.id}/status", body.model_dump())
        return await me_out(agent)

    # --- chats ------------------------------------------------------------------------------

    @router.get("/chats", tags=["chats"])
    async def list_chats(
        agent: CurrentAgent, view: Literal["new", "active"] = "active"
    ) -> list[ChatView]:
        """`new`: chats offered to me, awaiting acceptance; `active`: chats I own."""
        state = "offered" if view == "new" else "assigned"
        assignments = await peers.get(
            "routing", "/internal/assignments", params={"agent_id": agent.id, "state": state}
        )
        if not assignments:
            return []
        by_chat = {a["chat_id"]: a for a in assignments}
        chats = await peers.get("chat", "/internal/chats", params={"ids": ",".join(by_chat)})
        return [chat_view(c, by_chat[c["id"]]) for c in chats]

    @router.get("/chats/{chat_id}", tags=["chats"])
    async def get_chat(agent: CurrentAgent, chat_id: str) -> ChatView:
        return chat_view(*await accessible_chat(agent, chat_id))

    @router.post("/chats/{chat_id}/accept", tags=["chats"])
    async def accept_chat(agent: CurrentAgent, chat_id: str) -> ChatView:
        await accessible_chat(agent, chat_id)
        assignment = await peers.post(
            "routing", f"/internal/assignments/{chat_id}/accept", {"agent_id": agent.id}
        )
        return chat_view(await peers.get("chat", f"/internal/chats/{chat_id}"), assignment)

    @router.get("/chats/{chat_id}/messages", tags=["chats"])
    async def list_messages(agent: CurrentAgent, chat_id: str) -> list[dict[str, Any]]:
        await accessible_chat(agent, chat_id)
        messages: list[dict[str, Any]] = await peers.get(
            "chat", f"/internal/chats/{chat_id}/messages"
        )
        return messages

    @router.post(
        "/chats/{chat_id}/messages",
        tags=["chats"],
        status_code=status.HTTP_201_CREATED,
        openapi_extra={"requestBody": REPLY_BODY},
    )
    async def post_message(agent: CurrentAgent, chat_id: str, request: Request) -> dict[str, Any]:
        """Reply to the customer: `{"text": ...}` as JSON, or a file as multipart (`file`, and
        an optional `caption`) of at most `CHATDESK_MAX_FILE_MB`."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            await owned_chat(agent, chat_id)  # before storing anything
            upload = await files.read_upload(request, settings.max_file_bytes)
            key = await blobs.put(upload.data, content_type=upload.content_type, name=upload.name)
            reply: dict[str, Any] = {
                "agent_id": agent.id,
                "text": upload.caption,
                "file": {
                    "blob_key": key,
                    "kind": upload.kind,
                    "name": upload.name,
                    "mime_type": upload.content_type,
                    "size": len(upload.data),
                },
            }
        elif content_type.startswith("application/json"):
            try:
                body = TextMessageIn.model_validate_json(await request.body())
            except ValidationError as exc:
                errors = exc.errors(include_url=False, include_context=False, include_input=False)
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors) from exc
            await owned_chat(agent, chat_id)
            reply = {"agent_id": agent.id, "text": body.text}
        else:
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                'send the reply as JSON ({"text": ...}) or a file as multipart/form-data',
            )
        message: dict[str, Any] = await peers.post(
            "chat", f"/internal/chats/{chat_id}/replies", reply
        )
        return message

    @router.get("/channels", tags=["chats"])
    async def list_channel_names(_: CurrentAgent) -> list[ChannelSummary]:
        """Every channel's name and platform, for any agent: the console shows where each chat
        came from."""
        channels = await peers.get("ingest", "/internal/channels")
        return [ChannelSummary.model_validate(c) for c in channels]

    @router.get("/files/{attachment_id}", tags=["chats"], responses=files.FILE_RESPONSES)
    async def get_file(agent: CurrentAgent, attachment_id: str) -> Response:
        """A message's file, for whoever may see its chat (404 for anyone else)."""
        found = await peers.find("chat", f"/internal/attachments/{quote(attachment_id, safe='')}")
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown file")
        await accessible_chat(agent, found["chat_id"])
        if found["state"] != "stored" or not found["blob_key"]:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"the file is not available: it is {found['state']}"
            )
        blob = await blobs.get(found["blob_key"])
        if blob is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "the file is no longer stored")
        return files.file_response(blob, found["mime_type"], found["name"])

    async def complete(agent: Agent, chat_id: str) -> ChatView:
        if agent.role == "supervisor":
            chat, assignment = await accessible_chat(agent, chat_id)
        else:
            await owned_chat(agent, chat_id)
            assignment = None
        chat = await peers.post(
            "chat", f"/internal/chats/{chat_id}/complete", {"agent_id": agent.id}
        )
        return chat_view(chat, assignment)

    @router.post("/chats/{chat_id}/complete", tags=["chats"])
    async def complete_chat(agent: CurrentAgent, chat_id: str) -> ChatView:
        return await complete(agent, chat_id)

    async def transfer(agent: Agent, chat_id: str, body: TransferIn) -> ChatView:
        if agent.role != "supervisor":
            await owned_chat(agent, chat_id)
        else:
            await accessible_chat(agent, chat_id)
        if body.agent_id is not None:
            async with db.sessions() as session:
                if await session.get(Agent, body.agent_id) is None:
                    raise HTTPException(
                        status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown agent id {body.agent_id!r}"
                    )
        assignment = await peers.post(
            "routing",
            f"/internal/assignments/{chat_id}/transfer",
            {"by": agent.id, **body.model_dump()},
        )
        return chat_view(await peers.get("chat", f"/internal/chats/{chat_id}"), assignment)

    @router.post("/chats/{chat_id}/transfer", tags=["chats"])
    async def transfer_chat(agent: CurrentAgent, chat_id: str, body: TransferIn) -> ChatView:
        """Move a chat to another agent or queue: its owner or a supervisor may."""
        return await transfer(agent, chat_id, body)

    @router.get("/chats/{chat_id}/actions", tags=["chats"])
    async def list_actions(agent: CurrentAgent, chat_id: str) -> list[ChatAction]:
        await accessible_chat(agent, chat_id)
        return ACTIONS

    @router.post("/chats/{chat_id}/actions/{code}", tags=["chats"])
    async def run_action(
        agent: CurrentAgent,
        chat_id: str,
        code: str,
        body: Annotated[dict[str, Any] | None, Body()] = None,
    ) -> dict[str, Any]:
        """Run one of the chat's actions; `transfer` takes the body of `/transfer`."""
        if code == "complete":
            return (await complete(agent, chat_id)).model_dump(mode="json")
        if code == "transfer":
            try:
                target = TransferIn.model_validate(body or {})
            except ValidationError as exc:
                errors = exc.errors(include_url=False, include_context=False, include_input=False)
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors) from exc
            return (await transfer(agent, chat_id, target)).model_dump(mode="json")
        if code == "create_case":
            chat, assignment = await accessible_chat(agent, chat_id)
            messages = await peers.get("chat", f"/internal/chats/{chat_id}/messages")
            case: dict[str, Any] = await peers.post(
                "cases",
                "/internal/cases/from-chat",
                {
                    "chat_id": chat_id,
                    "contact_id": chat["contact_id"],
                    "agent_id": chat_view(chat, assignment).agent_id,
                    "messages": messages,
                },
            )
            return case
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown chat action {code!r}")

    # --- contacts (and duplicate rules): contacts.py -----------------------------------------

    contacts.add_routes(router, peers, blobs, current_agent, supervisor)

    @router.get("/cases/{case_id}", tags=["cases"])
    async def get_case(agent: CurrentAgent, case_id: str) -> dict[str, Any]:
        case: dict[str, Any] = await peers.get("cases", f"/internal/cases/{case_id}")
        return case

    # --- who and where chats can go (transfer targets) ------------------------------------

    async def agents_with_status(order: Any) -> list[MeOut]:
        statuses = {a["id"]: a["status"] for a in await peers.get("routing", "/internal/agents")}
        async with db.sessions() as session:
            agents = await session.scalars(select(Agent).order_by(order))
            return [
                MeOut(**agent_out(a).model_dump(), status=statuses.get(a.id, "inactive"))
                for a in agents
            ]

    @router.get("/agents", tags=["agent"])
    async def directory(_: CurrentAgent) -> list[MeOut]:
        """Every agent, with their status: whom a chat can be transferred to."""
        return await agents_with_status(Agent.display_name)

    @router.get("/queues", tags=["agent"])
    async def queue_directory(_: CurrentAgent) -> list[dict[str, str]]:
        """Every queue's id and name: where a chat can be transferred to."""
        queues = await peers.get("routing", "/internal/queues")
        return [{"id": q["id"], "name": q["name"]} for q in queues]

    # --- admin ------------------------------------------------------------------------------

    async def known_agents(agent_ids: list[str] | None) -> None:
        if not agent_ids:
            return
        async with db.sessions() as session:
            known = set(await session.scalars(select(Agent.id).where(Agent.id.in_(agent_ids))))
        unknown = sorted(set(agent_ids) - known)
        if unknown:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown agent ids: {unknown}"
            )

    @router.post("/admin/agents", tags=["admin"], status_code=status.HTTP_201_CREATED)
    async def create_agent(_: Supervisor, body: AgentIn) -> AgentOut:
        try:
            agent = await auth.create_agent(db, body)
        except auth.UsernameTaken as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"username {body.username!r} is taken"
            ) from exc
        return agent_out(agent)

    @router.get("/admin/agents", tags=["admin"])
    async def list_agents(_: Supervisor) -> list[MeOut]:
        return await agents_with_status(Agent.username)

    @router.patch("/admin/agents/{agent_id}", tags=["admin"])
    async def update_agent(me: Supervisor, agent_id: str, body: AgentPatch) -> AgentOut:
        """Rename an agent, change their role or password, or deactivate them (`active: false`:
        their sessions end and they go inactive) or activate them again."""
        if agent_id == me.id and (body.active is False or body.role == "agent"):
            raise HTTPException(
                status.HTTP_409_CONFLICT, "you cannot deactivate yourself or drop your own role"
            )
        agent = await auth.update_agent(db, agent_id, body)
        if agent is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown agent")
        if body.active is False:
            await peers.post("routing", f"/internal/agents/{agent.id}/logout")
        return agent_out(agent)

    @router.post("/admin/queues", tags=["admin"], status_code=status.HTTP_201_CREATED)
    async def create_queue(_: Supervisor, body: QueueIn) -> dict[str, Any]:
        await known_agents(body.agent_ids)
        queue: dict[str, Any] = await peers.post(
            "routing", "/internal/queues", body.model_dump(exclude_none=True)
        )
        return queue

    @router.patch("/admin/queues/{queue_id}", tags=["admin"])
    async def update_queue(_: Supervisor, queue_id: str, body: QueuePatch) -> dict[str, Any]:
        """Change any of a queue's options or its members; send `null` to lift a limit
        (`auto_complete_after_s`, `max_wait_s` with `on_max_wait`)."""
        await known_agents(body.agent_ids)
        queue: dict[str, Any] = await peers.call(
            "routing",
            "PATCH",
            f"/internal/queues/{quote(queue_id, safe='')}",
            json=body.model_dump(exclude_unset=True),
        )
        return queue

    @router.get("/admin/queues", tags=["admin"])
    async def list_queues(_: Supervisor) -> list[dict[str, Any]]:
        queues: list[dict[str, Any]] = await peers.get("routing", "/internal/queues")
        return queues

    @router.post("/admin/channels", tags=["admin"], status_code=status.HTTP_201_CREATED)
    async def create_channel(_: Supervisor, body: ChannelIn) -> dict[str, Any]:
        if await peers.find("routing", f"/internal/queues/{body.queue_id}") is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown queue id {body.queue_id!r}"
            )
        channel: dict[str, Any] = await peers.post(
            "ingest", "/internal/channels", body.model_dump()
        )
        return channel

    @router.get("/admin/channels", tags=["admin"])
    async def list_channels(_: Supervisor) -> list[dict[str, Any]]:
        channels: list[dict[str, Any]] = await peers.get("ingest", "/internal/channels")
        return channels

    @router.patch("/admin/channels/{channel_id}", tags=["admin"])
    async def update_channel(_: Supervisor, channel_id: str, body: ChannelPatch) -> dict[str, Any]:
        channel: dict[str, Any] = await peers.call(
            "ingest",
            "PATCH",
            f"/internal/channels/{quote(channel_id, safe='')}",
            json=body.model_dump(exclude_none=True),
        )
        return channel

    @router.delete(
        "/admin/channels/{channel_id}", tags=["admin"], status_code=status.HTTP_204_NO_CONTENT
    )
    async def delete_channel(_: Supervisor, channel_id: str) -> None:
        """Delete a channel that has no chats (one created by mistake). A channel with chats
        answers 409: deactivate it instead (`PATCH {"active": false}`), so that its chats keep
        their channel."""
        path = f"/internal/channels/{quote(channel_id, safe='')}"
        await peers.get("ingest", path)  # 404 for an unknown channel
        usage = await peers.get("chat", f"/internal/channels/{quote(channel_id, safe='')}/usage")
        if usage["chats"]:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"the channel has {usage['chats']} chats: deactivate it instead "
                '(PATCH {"active": false}); a deleted channel would leave them without one',
            )
        await peers.call("ingest", "DELETE", path)

    return router
