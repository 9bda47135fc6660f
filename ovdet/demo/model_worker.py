"""Model calls bounded in time end to end: a call past its timeout is stopped and leaves the model free.

Each call runs on a thread of its own. When the caller's time is up it gets `RequestTimeout` at
once, and the call is stopped: `CallStopped` is raised inside its thread at the next Python line
it runs (between two layers, batches or tensor operations; one C operation already running is
not interrupted). The next request does not wait for that: it starts on a new thread at once.
Calls still being stopped are counted; while `max_stopping` of them are, new calls are refused
rather than piled up, so a run of slow requests cannot take every core.
"""

from __future__ import annotations

import ctypes
import threading
import time


class RequestTimeout(TimeoutError):
    """A demo request took longer than the server allows, or the server is still stopping earlier ones."""


class CallStopped(BaseException):
    """Raised inside a model call that ran past its timeout. A BaseException, so that code which
    turns every `Exception` into a message (image decoding, say) does not swallow it."""


class _Call:
    """fn(*args, **kwargs) on its own thread; `finished` is set (under `lock`) once it cannot be stopped."""

    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.lock, self.done = threading.Lock(), threading.Event()
        self.finished = self.stopped = False
        self.value, self.error = None, None
        self.thread = threading.Thread(target=self._target, name="ovdet-demo-model", daemon=True)

    def _target(self) -> None:
        try:
            self._run()
        except CallStopped:  # the caller has gone: nothing to report
            pass

    def _run(self) -> None:
        try:
            self.value = self.fn(*self.args, **self.kwargs)
        except CallStopped:
            raise
        except BaseException as err:  # handed to the caller, raised there
            self.error = err
        finally:
            with self.lock:
                self.finished = True
            self.done.set()

    def stop(self) -> bool:
        """Raise CallStopped once in the call's thread unless it has finished; True if it was still running."""
        with self.lock:
            if self.finished or not self.thread.is_alive():
                return False
            if not self.stopped:
                self.stopped = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread.ident),
                                                           ctypes.py_object(CallStopped))
            return True


class ModelWorker:
    """Run callables one at a time, each within `timeout_s` (waiting for the previous one included).

    Args:
        timeout_s: seconds a caller waits for its result; then the call is stopped.
        max_stopping: calls past their timeout that may still be stopping before new calls are refused.
    """

    def __init__(self, timeout_s: float = 60.0, max_stopping: int = 2):
        if not timeout_s > 0:
            raise ValueError(f"the request timeout must be > 0 seconds, got {timeout_s}")
        if max_stopping < 1:
            raise ValueError(f"max_stopping must be >= 1, got {max_stopping}")
        self.timeout_s, self.max_stopping = float(timeout_s), max_stopping
        self._turn = threading.Lock()  # one live call at a time
        self._stopping: list[_Call] = []

    @property
    def stopping(self) -> int:
        """Calls past their timeout whose threads have not ended yet."""
        self._stopping = [c for c in self._stopping if c.thread.is_alive()]
        return len(self._stopping)

    def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on a fresh thread; RequestTimeout when it takes longer than the timeout."""
        deadline = time.monotonic() + self.timeout_s
        if not self._turn.acquire(timeout=self.timeout_s):
            raise self._timeout()
        try:
            if self.stopping >= self.max_stopping:
                raise RequestTimeout(f"the server is still stopping {self.stopping} earlier requests that ran past "
                                     "the timeout; try again in a few seconds")
            call = _Call(fn, args, kwargs)
            call.thread.start()
            if not call.done.wait(max(0.0, deadline - time.monotonic())) and call.stop():
                self._stopping.append(call)
                raise self._timeout()
            if not call.done.wait(5.0):  # finished right at the deadline: its result is there
                raise self._timeout()
            if call.error is not None:
                raise call.error
            return call.value
        finally:
            self._turn.release()

    def _timeout(self) -> RequestTimeout:
        return RequestTimeout(
            f"the request took longer than {self.timeout_s:g} s and was stopped; "
            "try a smaller image or fewer queries, or start the demo with a larger --timeout"
        )

    def shutdown(self) -> None:
        """Stop the calls still being stopped (they are daemon threads: they never block exit)."""
        for call in self._stopping:
            call.stop()
