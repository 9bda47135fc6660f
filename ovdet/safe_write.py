"""Files and folders written whole or not at all, and output paths that never overwrite an input or a
file ovdet did not write (the mark of `ovdet.file_mark`).

A result is written to a temp file in the target's own folder, flushed and fsynced, then renamed
over the target (`os.replace`, atomic on POSIX): a run killed with SIGKILL, a full disk or a
crash mid-write leaves the previous file untouched (or no file), never a 0-byte or cut-off one.
A kill may leave a hidden `.NAME.XXXX.tmp` beside it; nothing else. A folder (a model) is
written the same way, and replaces only a folder whose every file the writer wrote itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ovdet.errors import OvdetError
from ovdet.file_mark import check_replaceable_file

RESULT_SUFFIXES = (".json",)


@contextmanager
def atomic_writer(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """A file object to write `path` through; on a clean exit it replaces `path`, else `path` is untouched.

    Args:
        mode: "w" (text, `encoding`) or "wb" (bytes).
    Raises:
        OSError naming `path` when it cannot be written (full disk, no permission), an OSError raised
        inside the block included; `path` is then as it was. A replaced file keeps its permissions.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666: the user's umask applies, as for a plain open() (mkstemp would give 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if path.is_file():
            os.chmod(fd, stat.S_IMODE(path.stat().st_mode))
        with open(fd, mode, **({"encoding": encoding} if "b" not in mode else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, f"cannot write '{path}' ({err.strerror or err}); it was left as it was") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_writer`)."""
    with atomic_writer(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (see `atomic_writer`)."""
    with atomic_writer(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def check_output_path(
    path: str | Path,
    option: str,
    inputs: Iterable[str | Path | None] = (),
    suffixes: tuple[str, ...] = RESULT_SUFFIXES,
    overwrite: bool = False,
) -> Path:
    """Refuse an output path that would overwrite an input of the run or a file ovdet did not write.

    Args:
        option: how the user named it (`--out`), for the message.
        inputs: files this run reads (None entries are skipped); refused even with `overwrite`.
        suffixes: an existing file is replaced only when its name ends so (an extra check on top of the mark).
        overwrite: the user passed `--overwrite`: an existing result file without ovdet's mark may be replaced.
    Raises:
        OvdetError: one line naming the path and the fix.
    """
    path = Path(path)
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise OvdetError(
                f"{option} '{path}' is an input of this run ('{source}'); writing it would destroy that input: "
                "choose another path"
            )
    if path.is_dir():
        raise OvdetError(f"{option} '{path}' is a folder; name a file such as '{path / ('result' + suffixes[0])}'")
    if (path.exists() or path.is_symlink()) and not path.name.lower().endswith(suffixes):
        raise OvdetError(
            f"{option} '{path}' exists and is not a {' or '.join(suffixes)} file; ovdet overwrites only its own "
            f"results: choose a new path ending in {suffixes[0]}"
        )
    return check_replaceable_file(path, option, overwrite)


def check_output_folder(path: str | Path, option: str) -> Path:
    """Refuse an output folder that exists as a file (one line)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OvdetError(f"{option} '{path}' is a file, not a folder; name a new folder")
    return path


@contextmanager
def replace_folder(path: Path, written_by_us: Callable[[Path], set[str] | None], kind: str) -> Iterator[Path]:
    """A temp folder beside `path` to write into; on success it takes the place of `path` (dirs 0755,
    files 0644), on failure it is removed, so no half-written folder is ever left.

    `path` may be new, empty, or a folder `written_by_us(path)` accepts: that returns the relative
    names of the files the writer put there (None: not one of ours). Only those files are deleted;
    a folder holding anything else is refused before any work, and checked again before the swap
    (if it changed meanwhile, the new folder is kept beside it as `NAME-new-XXXX`).
    """
    path = Path(os.path.abspath(path))
    check_replaceable(path, written_by_us, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        yield tmp
        for item in [tmp, *tmp.rglob("*")]:  # mkdtemp is private (0700)
            item.chmod(0o755 if item.is_dir() else 0o644)
            if item.is_file():
                _fsync_file(item)  # on disk before the rename makes the folder visible
        try:
            ours = check_replaceable(path, written_by_us, kind)
        except OvdetError as err:  # it changed while we wrote: keep the work beside it
            kept = path.with_name(f"{path.name}-new-{secrets.token_hex(2)}")
            tmp.rename(kept)
            raise OvdetError(f"{err}; what was written is kept in '{kept}'") from None
        if not os.path.lexists(path):
            tmp.rename(path)
            return
        old = path.with_name(f".{path.name}-old-{secrets.token_hex(4)}")
        path.rename(old)
        try:
            tmp.rename(path)
        except OSError:
            old.rename(path)
            raise
        _remove_files(old, ours)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_replaceable(path: Path, written_by_us: Callable[[Path], set[str] | None], kind: str) -> set[str]:
    """The files of `path` that may be deleted to replace it; refuse (one line) a folder holding others."""
    path = Path(os.path.abspath(path))
    if not os.path.lexists(path):
        return set()
    if path.is_symlink() or not path.is_dir():
        what = "a link" if path.is_symlink() else "a file"
        raise OvdetError(f"'{path}' is {what}, not a folder; name a new folder to write {kind} into")
    cwd = Path.cwd().resolve()
    if path.resolve() == cwd or path.resolve() in cwd.parents:
        raise OvdetError(f"'{path}' is the current folder or holds it; name a new folder inside it, such as ./model")
    entries = set(folder_entries(path))
    if not entries:
        return set()
    ours = written_by_us(path)
    if ours is None:
        raise OvdetError(
            f"'{path}' is not empty and is not {kind} ({len(entries)} files, e.g. '{sorted(entries)[0]}'); "
            f"ovdet writes {kind} only into a new or empty folder or over one it wrote: choose another folder"
        )
    foreign = sorted(entries - ours)
    if foreign:
        raise OvdetError(
            f"'{path}' is {kind} but also holds files ovdet did not write ({foreign[:5]}); replacing it would "
            "delete them: move them out or choose another folder"
        )
    return entries


def _remove_files(folder: Path, names: set[str]) -> None:
    """Delete the named files under `folder`, then its emptied folders; anything else stays."""
    for name in names:
        (folder / name).unlink(missing_ok=True)
    for root, dirs, _ in os.walk(folder, topdown=False):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, d))
    with contextlib.suppress(OSError):
        folder.rmdir()


def folder_entries(folder: Path) -> list[str]:
    """Relative names of everything under `folder` that is not a folder (links are listed, never followed)."""
    names = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        rel = Path(root).relative_to(folder)
        names += [(rel / n).as_posix() for n in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]]
    return sorted(names)


def _same_file(path: Path, source: Path) -> bool:
    """`path` and `source` are the same file on disk (through links too), or name the same place."""
    try:
        if path.exists() and source.exists():
            return os.path.samefile(path, source)
        return os.path.realpath(path) == os.path.realpath(source)
    except (OSError, ValueError):
        return False


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; some file systems do not support it, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
