"""ASGI middleware bounding what one request may send: body size, pauses, total time, and uploads per client.

Gradio reads a request body as long as the client keeps sending it: four uploads trickling a byte
every 15 s held every upload slot for ever. Here a body
- may not pass `max_body` bytes (413, before it is read when it declares its length);
- may pause at most `body_idle_s` between chunks and must be complete `body_deadline_s` after the
  request started (408 either way);
- at most `max_uploads` uploads are received at once, at most `max_uploads_per_client` of them from
  one client address (503).
A client that goes away in the middle of its body ends the request quietly (it is no server error).
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import ClientDisconnect

UPLOAD_PATH = "/gradio_api/upload"


class _Refused(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


class RequestLimits:
    """ASGI middleware: bounded request bodies and uploads; `before_response(is_upload)` runs before each
    response starts (so an upload's reply comes after the storage has been pruned).

    Args:
        app: the ASGI app (FastAPI with the Gradio page mounted).
        max_body: largest request body in bytes.
        body_idle_s: longest pause between two chunks of a body.
        body_deadline_s: longest time from a request's start to the end of its body.
        max_uploads: uploads received at the same time.
        max_uploads_per_client: uploads one client address may have running at the same time.
        before_response: called (on a worker thread) before every response, e.g. to prune the uploads.
    """

    def __init__(self, app, max_body: int, body_idle_s: float = 20.0, body_deadline_s: float = 120.0,
                 max_uploads: int = 4, max_uploads_per_client: int = 2, before_response=None):
        if not 1 <= max_uploads_per_client <= max_uploads:
            raise ValueError(f"need 1 <= max_uploads_per_client <= max_uploads, got {max_uploads_per_client}, "
                             f"{max_uploads}")
        self.app, self.max_body, self.body_idle_s, self.body_deadline_s = app, max_body, body_idle_s, body_deadline_s
        self.max_uploads, self.max_uploads_per_client = max_uploads, max_uploads_per_client
        self.before_response = before_response
        self.uploads = 0
        self.uploads_by_client: dict[str, int] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        is_upload = scope["path"].endswith(UPLOAD_PATH)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body:
            return await _reply(send, 413, f"request body over {self.max_body} bytes")
        if not is_upload:
            return await self._limited(scope, receive, send, False)
        client = (scope.get("client") or ("?",))[0]
        if self.uploads >= self.max_uploads:
            return await _reply(send, 503, f"{self.uploads} uploads are already running; try again")
        if self.uploads_by_client.get(client, 0) >= self.max_uploads_per_client:
            return await _reply(send, 503, f"{self.max_uploads_per_client} uploads from {client} are already "
                                "running; wait for them to finish")
        self.uploads += 1
        self.uploads_by_client[client] = self.uploads_by_client.get(client, 0) + 1
        try:
            await self._limited(scope, receive, send, True)
        finally:
            self.uploads -= 1
            left = self.uploads_by_client.pop(client) - 1
            if left:
                self.uploads_by_client[client] = left

    async def _limited(self, scope, receive, send, is_upload: bool):
        received, body_done, refusal, replaced, gone = 0, False, None, False, False
        deadline = time.monotonic() + self.body_deadline_s

        async def limited_receive():
            nonlocal received, body_done, refusal, gone
            if body_done:  # the app now only listens for a disconnect: no deadline
                return await receive()
            left = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), min(self.body_idle_s, max(left, 0.0)))
            except asyncio.TimeoutError:
                text = (f"the request body paused over {self.body_idle_s:g} s" if left > self.body_idle_s
                        else f"the request body took over {self.body_deadline_s:g} s")
                refusal = _Refused(408, text)
                raise refusal from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    refusal = _Refused(413, f"request body over {self.max_body} bytes")
                    raise refusal
                body_done = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                gone = True
            return message

        async def guarded_send(message):
            nonlocal replaced
            if message["type"] == "http.response.start" and self.before_response is not None:
                await asyncio.to_thread(self.before_response, is_upload)
            if refusal is None:
                return await send(message)
            if not replaced:  # the app's own error response is replaced by the refusal
                replaced = True
                await _reply(send, refusal.status, refusal.text)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except ClientDisconnect:
            return  # the client left in the middle of its body: nobody to answer
        except Exception:
            if refusal is None and not gone:
                raise
            if gone:
                return
        if refusal is not None and not replaced:
            await _reply(send, refusal.status, refusal.text)


async def _reply(send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]  # and uvicorn closes the connection after it
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
