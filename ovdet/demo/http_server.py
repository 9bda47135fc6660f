"""The demo's HTTP server: uvicorn on a socket bound here, with the limits Gradio's launch() leaves unset.

Gradio's `launch()` starts uvicorn with its defaults and no way to change them: a client that
sends its headers a byte at a time holds a connection for ever. Here the page is mounted on a
FastAPI app (`gr.mount_gradio_app`) and served by our own `uvicorn.Server`:
- a connection must finish a request's headers within `header_timeout_s`;
- one client address holds at most `max_per_client` connections (more get 503 and are closed), so
  one client's slow connections cannot use up the `max_connections` of everyone;
- idle keep-alive connections close after 5 s.
Request bodies and uploads are bounded in `ovdet.demo.request_limits`.
"""

from __future__ import annotations

import errno
import signal
import socket
import threading

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ovdet.errors import OvdetError

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


_BUSY_TEXT = b"too many connections from this address; try again later"
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
         b"content-length: %d\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT))


class _HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol: a connection whose request headers have not all arrived in time is closed,
    and one client address may hold at most `max_per_client` connections (the class's `per_client` counts)."""

    header_timeout_s = 10.0
    max_per_client = 32
    per_client: dict[str, int] = {}  # replaced per server by RunningServer

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) and peer else None
        if self._peer is not None:
            if self.per_client.get(self._peer, 0) >= self.max_per_client:
                self._peer = None  # not counted
                transport.write(_BUSY)
                transport.close()
                return
            self.per_client[self._peer] = self.per_client.get(self._peer, 0) + 1
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this connection gets the same time

    def connection_lost(self, exc) -> None:
        self._disarm()
        peer, self._peer = getattr(self, "_peer", None), None
        if peer is not None:
            left = self.per_client.get(peer, 1) - 1
            if left > 0:
                self.per_client[peer] = left
            else:
                self.per_client.pop(peer, None)
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


class RunningServer:
    """uvicorn serving `app` on `sock` in a background thread; `close()` stops it and runs `on_close`.

    Args:
        app: the ASGI app.
        sock: a socket from `bind_port`.
        max_connections: open connections served at once; more get 503.
        header_timeout_s: time a connection has to send a request's headers.
        max_per_client: open connections one client address may hold; more get 503 and are closed.
        on_close: callables run once the server has stopped (cleanup).
    """

    def __init__(self, app, sock: socket.socket, max_connections: int = 256, header_timeout_s: float = 10.0,
                 max_per_client: int = 32, on_close=()):
        if max_per_client < 1:
            raise OvdetError(f"max_per_client must be >= 1, got {max_per_client}")
        protocol = type("HeaderDeadline", (_HeaderDeadline,), {
            "header_timeout_s": header_timeout_s, "max_per_client": max_per_client, "per_client": {}})
        config = uvicorn.Config(app, http=protocol, log_level="warning", timeout_keep_alive=KEEP_ALIVE_S,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, limit_concurrency=max_connections)
        self.server, self.sock, self.on_close = uvicorn.Server(config), sock, list(on_close)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        # Waiting is on this event, never on Thread.join: a KeyboardInterrupt inside join() can leave the
        # thread looking finished while uvicorn still runs, and the socket was then closed under it.
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="ovdet-demo-http")
        self._closed = False
        self.blocks = self.uploads = None  # what `app.launch` serves (the page, its UploadStore), for callers

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self._stopped.set()

    def start(self, timeout_s: float = 60.0) -> "RunningServer":
        self._thread.start()
        for _ in range(int(timeout_s * 20)):
            if self.server.started:
                return self
            if self._stopped.wait(0.05):
                break
        self.close()
        raise OvdetError(f"the demo server did not start on {self.url}")

    def wait(self) -> None:
        """Serve until Ctrl-C or SIGTERM (both end in KeyboardInterrupt), then close."""
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            while not self._stopped.wait(0.5):
                pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.server.should_exit = True
        if self._thread.ident is not None:  # started
            self._stopped.wait(GRACEFUL_SHUTDOWN_S + 10)
        self.sock.close()
        for cleanup in self.on_close:
            cleanup()


def _interrupt(signum, frame):
    raise KeyboardInterrupt
