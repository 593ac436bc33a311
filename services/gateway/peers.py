"""Calls to the other services' internal APIs, with their errors passed on to the console."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import HTTPException, status

from libs.common.service import Runtime

UPSTREAM_FAILED = (status.HTTP_502_BAD_GATEWAY, status.HTTP_504_GATEWAY_TIMEOUT)


def _detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("detail") if isinstance(body, dict) else None


class Peers:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def call(self, service: str, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.runtime.client(service).request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"the {service} service is unreachable"
            ) from exc
        if response.status_code in UPSTREAM_FAILED:
            # The peer is fine but what it depends on (a platform) failed: it says what.
            raise HTTPException(
                status.HTTP_502_BAD_GATEWAY, _detail(response) or f"the {service} service failed"
            )
        if response.status_code >= 500:
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"the {service} service failed")
        if response.status_code >= 400:
            raise HTTPException(response.status_code, _detail(response) or response.text)
        if response.status_code == status.HTTP_204_NO_CONTENT:
            return None
        return response.json()

    async def get(self, service: str, path: str, **kwargs: Any) -> Any:
        return await self.call(service, "GET", path, **kwargs)

    async def post(self, service: str, path: str, body: Any = None) -> Any:
        return await self.call(service, "POST", path, json=body)

    async def put(self, service: str, path: str, body: Any) -> Any:
        return await self.call(service, "PUT", path, json=body)

    async def find(self, service: str, path: str, **kwargs: Any) -> Any | None:
        """GET that answers None for a 404."""
        try:
            return await self.get(service, path, **kwargs)
        except HTTPException as exc:
            if exc.status_code == status.HTTP_404_NOT_FOUND:
                return None
            raise
