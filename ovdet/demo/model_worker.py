"""Model calls bounded in count and time: one at a time on a worker thread, each caller waits a set time.

A model call cannot be interrupted halfway; when a caller's time is up it gets an error at once,
a call that had not started yet is cancelled, and one already running finishes in the background
while the next caller waits behind it (within its own time limit). So at most one call runs, at
most one waits per queued request, and no request waits longer than the timeout.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout


class RequestTimeout(TimeoutError):
    """A demo request took longer than the server allows."""


class ModelWorker:
    """Run callables one at a time on a single worker thread, waiting at most `timeout_s` for each.

    Args:
        timeout_s: seconds a caller waits for its result (queueing behind a running call included).
    """

    def __init__(self, timeout_s: float = 60.0):
        if not timeout_s > 0:
            raise ValueError(f"the request timeout must be > 0 seconds, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ovdet-demo-model")

    def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on the worker; RequestTimeout when it takes longer than the timeout."""
        future = self._pool.submit(fn, *args, **kwargs)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            future.cancel()  # not started yet: it never runs
            raise RequestTimeout(
                f"the request took longer than {self.timeout_s:g} s and was stopped; "
                "try a smaller image or fewer queries, or start the demo with a larger --timeout"
            ) from None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
