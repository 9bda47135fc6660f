"""ASGI middleware in front of Gradio's routes: files only from the upload folder, no URL fetching, real events.

Gradio's file route serves more than the uploads: anything under the server's working folder
`.gradio/cached_examples/` (GET `/gradio_api/file=.gradio/cached_examples/secret.txt` gave 200),
and it fetches and streams any public URL named there (`file=https://...`), as `proxy=` does for
other Gradio apps. The demo's page only ever links to files in its own upload folder, so here:
- `file=PATH` / `file/PATH` is served only when PATH resolves inside `upload_root` (else 403);
  a URL there, and any `proxy=` request, is 403;
- `queue/join` must name an event of this page: `fn_index` 99 or -1 reached Gradio as a KeyError
  (HTTP 500 and a traceback in the log); it is a 422 of one line here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

API_PREFIX = "/gradio_api/"
JOIN_PATH = "/gradio_api/queue/join"


class RouteGuard:
    """ASGI middleware: refuses file, proxy and queue requests the demo's page never makes.

    Args:
        app: the ASGI app (FastAPI with the Gradio page mounted).
        upload_root: the only folder whose files are served (Gradio's upload folder, GRADIO_TEMP_DIR).
        fn_indices: callable giving the event ids of the page (`lambda: blocks.fns.keys()`).
    """

    def __init__(self, app, upload_root: Path, fn_indices):
        self.app, self.upload_root, self.fn_indices = app, Path(upload_root).resolve(), fn_indices

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or API_PREFIX not in scope["path"]:
            return await self.app(scope, receive, send)
        route = scope["path"].split(API_PREFIX, 1)[1]
        if route.startswith("proxy="):
            return await _reply(send, 403, "this demo proxies nothing")
        if route.startswith(("file=", "file/")):
            name = route[5:]
            if not self._served(name):
                return await _reply(send, 403, "file not served: only this page's uploads and results are")
            return await self.app(scope, receive, send)
        if scope["path"].endswith(JOIN_PATH) and scope["method"] == "POST":
            return await self._join(scope, receive, send)
        return await self.app(scope, receive, send)

    def _served(self, name: str) -> bool:
        """True for a file inside the upload folder (links resolved); never a URL."""
        if "://" in name or name.startswith(("http:", "https:", "//")):
            return False
        try:
            path = (Path.cwd() / name).resolve() if not os.path.isabs(name) else Path(name).resolve()
            return path.is_relative_to(self.upload_root) and path.is_file()
        except (OSError, ValueError):
            return False

    async def _join(self, scope, receive, send):
        """Read the (size-bounded) body, check its fn_index, then hand the same body to Gradio."""
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = self._bad_event(body)
        if problem:
            return await _reply(send, 422, problem)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _bad_event(self, body: bytes) -> str:
        """One line when the body names an event this page does not have; '' otherwise (Gradio checks the rest)."""
        try:
            fn_index = json.loads(body).get("fn_index")
        except (ValueError, AttributeError):
            return ""  # not a JSON object: Gradio's own 422 says so
        if fn_index is None:
            return ""
        valid = set(self.fn_indices())
        if isinstance(fn_index, bool) or not isinstance(fn_index, int) or fn_index not in valid:
            shown = repr(fn_index)[:40]
            return f"fn_index {shown} is not an event of this page (it has {len(valid)}: {sorted(valid)[:20]})"
        return ""


async def _reply(send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
