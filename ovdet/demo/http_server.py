"""The demo's HTTP server: uvicorn on a socket bound here, with the limits Gradio's launch() leaves unset.

Gradio's `launch()` starts uvicorn with its defaults and no way to change them: a client that
sends its headers or body a byte at a time holds a connection for ever, and a request body has
no size limit. Here the page is mounted on a FastAPI app (`gr.mount_gradio_app`) and served by
our own `uvicorn.Server`:
- a connection must finish a request's headers within `header_timeout_s`;
- a request body may pause at most `body_idle_s` between chunks (else 408) and may not pass
  `max_body` bytes (else 413, before it is read when it declares its length);
- at most `max_uploads` uploads are received at once (else 503);
- idle keep-alive connections close after 5 s; at most `max_connections` connections (else 503).
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import threading

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ovdet.errors import OvdetError

UPLOAD_PATH = "/gradio_api/upload"
KEEP_ALIVE_S = 5  # idle keep-alive connections are closed after this
GRACEFUL_SHUTDOWN_S = 3  # open event streams are cut after this on exit


def bind_port(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, bound before anything slow starts; a busy port is one clear line."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free; a listener is not
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise OvdetError(f"port {port} is in use: use --port") from None
        raise OvdetError(f"cannot listen on {host}:{port} ({err.strerror or err}): use --host or --port") from None
    return sock


class _HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers have not all arrived in time."""

    header_timeout_s = 10.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this connection gets the same time

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()

    def _headers_too_slow(self) -> None:
        waiting = self.cycle is None or self.cycle.response_complete  # no request in progress
        if waiting and not self.transport.is_closing():
            self.transport.close()


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
        max_uploads: uploads received at the same time.
        before_response: called (on a worker thread) before every response, e.g. to prune the uploads.
    """

    def __init__(self, app, max_body: int, body_idle_s: float = 20.0, max_uploads: int = 4, before_response=None):
        self.app, self.max_body, self.body_idle_s = app, max_body, body_idle_s
        self.max_uploads, self.before_response = max_uploads, before_response
        self.uploads = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        is_upload = scope["path"].endswith(UPLOAD_PATH)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body:
            return await _reply(send, 413, f"request body over {self.max_body} bytes")
        if is_upload and self.uploads >= self.max_uploads:
            return await _reply(send, 503, f"{self.uploads} uploads are already running; try again")
        self.uploads += is_upload
        try:
            await self._limited(scope, receive, send, is_upload)
        finally:
            self.uploads -= is_upload

    async def _limited(self, scope, receive, send, is_upload: bool):
        received, body_done, refusal, replaced = 0, False, None, False

        async def limited_receive():
            nonlocal received, body_done, refusal
            if body_done:  # the app now only listens for a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_idle_s)
            except asyncio.TimeoutError:
                refusal = _Refused(408, f"the request body paused over {self.body_idle_s:g} s")
                raise refusal from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    refusal = _Refused(413, f"request body over {self.max_body} bytes")
                    raise refusal
                body_done = not message.get("more_body", False)
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
        except Exception:
            if refusal is None:
                raise
        if refusal is not None and not replaced:
            await _reply(send, refusal.status, refusal.text)


async def _reply(send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]  # and uvicorn closes the connection after it
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RunningServer:
    """uvicorn serving `app` on `sock` in a background thread; `close()` stops it and runs `on_close`.

    Args:
        app: the ASGI app.
        sock: a socket from `bind_port`.
        max_connections: open connections served at once; more get 503.
        header_timeout_s: time a connection has to send a request's headers.
        on_close: callables run once the server has stopped (cleanup).
    """

    def __init__(self, app, sock: socket.socket, max_connections: int = 256, header_timeout_s: float = 10.0,
                 on_close=()):
        protocol = type("HeaderDeadline", (_HeaderDeadline,), {"header_timeout_s": header_timeout_s})
        config = uvicorn.Config(app, http=protocol, log_level="warning", timeout_keep_alive=KEEP_ALIVE_S,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, limit_concurrency=max_connections)
        self.server, self.sock, self.on_close = uvicorn.Server(config), sock, list(on_close)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="ovdet-demo-http")
        self._closed = False
        self.blocks = self.uploads = None  # what `app.launch` serves (the page, its UploadStore), for callers

    def start(self, timeout_s: float = 60.0) -> "RunningServer":
        self._thread.start()
        for _ in range(int(timeout_s * 20)):
            if self.server.started:
                return self
            if not self._thread.is_alive():
                break
            self._thread.join(0.05)
        self.close()
        raise OvdetError(f"the demo server did not start on {self.url}")

    def wait(self) -> None:
        """Serve until Ctrl-C or SIGTERM (both end in KeyboardInterrupt), then close."""
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(GRACEFUL_SHUTDOWN_S + 10)
        self.sock.close()
        for cleanup in self.on_close:
            cleanup()


def _interrupt(signum, frame):
    raise KeyboardInterrupt
