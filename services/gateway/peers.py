"""Calls to the other services' internal APIs, with their errors passed on to the console."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import HTTPException, status

from libs.common.service import Runtime


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
        if response.status_code >= 500:
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"the {service} service failed")
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise HTTPException(response.status_code, detail)
        return response.json()

    async def get(self, service: str, path: str, **kwargs: Any) -> Any:
        return await self.call(service, "GET", path, **kwargs)

    async def post(self, service: str, path: str, body: Any = None) -> Any:
        return await self.call(service, "POST", path, json=body)

    async def put(self, service: str, path: str, body: Any) -> Any:
        return await self.call(service, "PUT", path, json=body)

    async def find(self, service: str, path: str) -> Any | None:
        """GET that answers None for a 404."""
        try:
            return await self.get(service, path)
        except HTTPException as exc:
            if exc.status_code == status.HTTP_404_NOT_FOUND:
                return None
            raise
