"""`GET /api/ws?token=...`: an agent's live event stream.

The server sends `{"id", "type", "data"}` for every event in the agent's log after the
connection's cursor. A new connection starts at the newest event (subscribe, then fetch state);
a reconnecting client sends `{"resume_after": "<last id>"}` and gets everything after it, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect, status

from libs.common.db import Database
from services.gateway import auth, push
from services.gateway.push import Hub

log = logging.getLogger(__name__)

# Catches events written by other gateway replicas, whose commits cannot wake us directly.
POLL_S = 1.0


def build_router(db: Database, hub: Hub) -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.websocket("/ws")
    async def stream(websocket: WebSocket, token: str = Query(default="")) -> None:
        async with db.sessions() as session:
            agent = await auth.agent_for_token(session, token) if token else None
            cursor = await push.latest_event_id(session, agent.id) if agent else 0
        await websocket.accept()
        if agent is None:
            await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="invalid token")
            return
        wake = hub.connect(agent.id)
        resume: list[int] = []

        async def receive() -> None:
            try:
                while True:
                    try:
                        message = orjson.loads(await websocket.receive_text())
                        resume.append(int(message["resume_after"]))
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        await websocket.send_json(
                            {
                                "type": "error",
                                "data": {"detail": 'expected {"resume_after": "<id>"}'},
                            }
                        )
                        continue
                    wake.set()
            finally:
                wake.set()

        receiver = asyncio.create_task(receive())
        try:
            while not receiver.done():
                wake.clear()
                if resume:
                    cursor = resume.pop()
                async with db.sessions() as session:
                    events = await push.events_after(session, agent.id, cursor)
                for event in events:
                    frame = {"id": str(event.id), "type": event.type, "data": event.data}
                    await websocket.send_text(orjson.dumps(frame).decode())
                    cursor = event.id
                if len(events) < push.PAGE:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), POLL_S)
        except WebSocketDisconnect:
            pass
        finally:
            receiver.cancel()
            hub.disconnect(agent.id, wake)

    return router
