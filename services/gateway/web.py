"""The agent console: static files (`console/`) served at `/`, next to the API.

The console is native ES modules with no build step (decision 18 in docs/architecture.md). Any
path that is not a file and has no extension is one of the console's own pages (`/chats/<id>`,
`/admin/queues`), so it gets `index.html` and the console routes it in the browser. Paths under
`/api/` never do: an unknown API path stays a JSON 404.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

CONSOLE_DIR = Path(__file__).parent / "console"

# No file has a content hash in its name, so the browser revalidates each one (an ETag answers
# 304 when it has not changed). The console talks to its own origin only.
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


class ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            last = path.rsplit("/", 1)[-1]
            if exc.status_code != 404 or path.startswith("api/") or "." in last:
                raise
            response = await super().get_response("index.html", scope)
        response.headers.update(HEADERS)
        return response


def console_files() -> ConsoleFiles:
    return ConsoleFiles(directory=CONSOLE_DIR, html=True)
