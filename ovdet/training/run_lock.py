"""One `ovdet train` per run folder: a lock file that names its process, removed when the run ends."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ovdet.errors import OvdetError
from ovdet.training.messages import say

LOCK_NAME = "train.lock"


class RunLockedError(OvdetError):
    """Another live `ovdet train` writes into this run folder."""


class RunLock:
    """Hold `RUN_DIR/train.lock` for the duration of a `with` block.

    A second run into the same folder is refused (`RunLockedError`) instead of mixing its checkpoints
    and logs with the first one's. A lock left by a process that no longer exists on this host (a
    SIGKILL, an OOM kill) is taken over. A lock the same process already holds is reused, so the CLI
    and `train()` can both take it. Only the main process takes it: DDP ranks > 0 and other nodes
    run inside the main process's lock.
    """

    def __init__(self, run_dir: str | Path | None):
        self.path = Path(run_dir) / LOCK_NAME if run_dir is not None else None
        self.owned = False
        self.took_over: dict | None = None

    def __enter__(self) -> "RunLock":
        if self.path is None or not is_main_process():
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            if _create(self.path, record):
                self.owned = True
                return self
            holder = _read(self.path)
            if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                return self  # this process holds it already (the CLI took it before train())
            if not _is_stale(holder):
                raise RunLockedError(
                    f"run folder '{self.path.parent}' is in use by another ovdet train (pid {holder.get('pid')} on "
                    f"{holder.get('host')}, since {holder.get('started')}); give another hydra.run.dir, or delete "
                    f"'{self.path}' if that run is gone"
                )
            if _read(self.path) == holder:  # still the dead run's lock: take it over
                self.path.unlink(missing_ok=True)
                self.took_over = holder
                say(f"warning: took over the lock of a run that is gone (pid {holder.get('pid')})", err=True)
        raise RunLockedError(f"could not take the lock '{self.path}'; another ovdet train started at the same time")

    def __exit__(self, *exc) -> None:
        if self.owned and self.path is not None:
            if _read(self.path).get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.owned = False


def _create(path: Path, record: dict) -> bool:
    """Create `path` holding `record`, atomically (never half-written); False if it exists."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(record))
    try:
        os.link(temp, path)  # fails if the lock exists; readers never see a partial file
        return True
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)


def _read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _is_stale(holder: dict) -> bool:
    """The holder is a process of this host that no longer runs (or the lock is unreadable)."""
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return True
    if holder.get("host") != socket.gethostname():
        return False  # cannot see another machine's processes
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, under another user
    return False


def is_main_process() -> bool:
    """Global rank 0 by the launchers' environment (Lightning, torchrun, SLURM); before any trainer exists."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))
