"""`GET /api/ws?token=...`: an agent's live event stream.

The server sends `{"id", "type", "data"}` for every event in the agent's log after the
connection's cursor. A new connection starts at the newest event (subscribe, then fetch state);
a reconnecting client sends `{"resume_after": "<last id>"}` (or passes `resume_after` in the
query) and gets everything after it, once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect, status

from libs.common.db import Database
from services.gateway import auth, push
from services.gateway.presence import Presence
from services.gateway.push import Hub

log = logging.getLogger(__name__)

# How often a connection reads the log itself, for events that other gateway replicas wrote:
# their commits cannot hand it anything.
POLL_S = 1.0
# How long a new connection waits for the client's `resume_after` before streaming.
RESUME_WAIT_S = 0.5
# Frame ids a connection remembers having sent, for a late `resume_after` (clients send it
# first thing, so a few suffice).
MAX_REMEMBERED = 10_000


def build_router(db: Database, hub: Hub, presence: Presence) -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.websocket("/ws")
    async def stream(
        websocket: WebSocket,
        token: str = Query(default=""),
        resume_after: int | None = Query(default=None, ge=0),
    ) -> None:
        async with db.sessions() as session:
            agent = await auth.agent_for_token(session, token) if token else None
            cursor = await push.latest_event_id(session, agent.id) if agent else 0
        if resume_after is not None:
            cursor = resume_after
        await websocket.accept()
        if agent is None:
            await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="invalid token")
            return
        listener = hub.connect(agent.id)
        await presence.report([agent.id])  # a console back within the grace, or after it
        resume: list[int] = []
        heard = asyncio.Event()

        async def receive() -> None:
            try:
                while True:
                    try:
                        message = orjson.loads(await websocket.receive_text())
                        resume.append(int(message["resume_after"]))
                        heard.set()
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        await websocket.send_json(
                            {
                                "type": "error",
                                "data": {"detail": 'expected {"resume_after": "<id>"}'},
                            }
                        )
                        continue
                    listener.wake.set()
            finally:
                listener.wake.set()

        receiver = asyncio.create_task(receive())
        if resume_after is None:
            # A reconnecting client says where it left off first thing: hear it before sending
            # anything, so that what it missed comes first and in order.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(heard.wait(), RESUME_WAIT_S)
        loop = asyncio.get_running_loop()
        next_read = loop.time()  # read once at once: commits between the cursor and connect()
        # What this connection sent since the last resume: a resume that arrives after the
        # first frames must not send them twice.
        sent: set[int] = set()
        skip: set[int] = set()
        try:
            while not receiver.done():
                listener.wake.clear()
                frames = listener.take()
                if frames and not push.in_sequence(frames, cursor):
                    frames = None  # another replica wrote in between: read the log
                if resume:
                    cursor = resume.pop()
                    frames = None
                    skip, sent = sent, set()
                if frames is None or loop.time() >= next_read:
                    async with db.sessions() as session:
                        frames = await push.events_after(session, agent.id, cursor)
                    # A full page means more to read: come back at once.
                    next_read = loop.time() + (0 if len(frames) == push.PAGE else POLL_S)
                for frame in frames:
                    if frame.id > cursor:  # a frame both handed and read is sent once
                        if frame.id not in skip:
                            data = {"id": str(frame.id), "type": frame.type, "data": frame.data}
                            await websocket.send_text(orjson.dumps(data).decode())
                            if len(sent) < MAX_REMEMBERED:
                                sent.add(frame.id)
                        cursor = frame.id
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(listener.wake.wait(), max(0.0, next_read - loop.time()))
        except WebSocketDisconnect:
            pass
        finally:
            receiver.cancel()
            hub.disconnect(agent.id, listener)

    return router
