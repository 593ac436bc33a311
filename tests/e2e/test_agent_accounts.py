"""Supervisors edit agents' accounts: rename, change role or password, deactivate, activate."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.support.desk import AGENT_PASSWORD, agent_and_queue
from tests.support.product import Console, Product

pytestmark = pytest.mark.e2e


async def login(product: Product, username: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=product.gateway) as client:
        return await client.post(
            "/api/auth/login", json={"username": username, "password": password}
        )


async def test_a_deactivated_agent_is_logged_out_and_cannot_log_in_until_activated(
    product: Product,
) -> None:
    admin, agent, _ = await agent_and_queue(product)
    anna = await Console.login(product, agent["username"], AGENT_PASSWORD)
    await anna.http.put("/api/me/status", json={"status": "active"})
    path = f"/api/admin/agents/{agent['id']}"

    renamed = await admin.http.patch(path, json={"display_name": "Anna K.", "password": "x"})
    assert renamed.status_code == 422 and renamed.json()["detail"][0]["loc"] == [
        "body",
        "password",
    ]
    renamed = await admin.http.patch(path, json={"display_name": "Anna K."})
    assert renamed.json() | {"id": "-"} == {
        "id": "-",
        "username": agent["username"],
        "display_name": "Anna K.",
        "role": "agent",
        "active": True,
    }
    assert (await anna.http.patch(path, json={"active": False})).status_code == 403

    off = await admin.http.patch(path, json={"active": False})
    assert off.status_code == 200 and off.json()["active"] is False
    assert (await anna.http.get("/api/me")).status_code == 401  # the session ended
    refused = await login(product, agent["username"], AGENT_PASSWORD)
    assert refused.status_code == 403 and refused.json()["detail"] == "this account is deactivated"
    listed = {a["id"]: a for a in (await admin.http.get("/api/admin/agents")).json()}
    assert listed[agent["id"]]["active"] is False

    password = "new-" + secrets.token_hex(4)
    on = await admin.http.patch(path, json={"active": True, "password": password})
    assert on.json()["active"] is True
    assert (await login(product, agent["username"], AGENT_PASSWORD)).status_code == 401
    # Deactivation logged her out: inactive meanwhile, her status back on her next login.
    back = await login(product, agent["username"], password)
    assert back.status_code == 200 and back.json()["agent"]["status"] == "active"

    mine = f"/api/admin/agents/{admin.me['id']}"
    assert (await admin.http.patch(mine, json={"active": False})).status_code == 409
    assert (await admin.http.patch("/api/admin/agents/nobody", json={})).status_code == 404
    await admin.close()
    await anna.close()
