"""Run directories: refuse a folder that would be overwritten, clear one on --force, and lock one
while a run writes it, so two processes never interleave their records in one folder.

`check_out` reads only (nothing is created); `locked` holds an exclusive, non-blocking fcntl lock
on DIR/.lock, whose text is the holder's pid.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scadles.errors import UserError

LOCK = ".lock"
# what a run writes into its folder: what --force removes (and nothing else)
RUN_FILES = (
    "config.json",
    "config_defaults.json",
    "steps.jsonl",
    "evals.jsonl",
    "summary.json",
    "model.pt",
    "label_counts.csv",
    "label_distribution.png",
    "availability.png",
)
RUN_GLOBS = (
    "checkpoint*.pt",
    "checkpoint*.prev",  # a rank's previous checkpoint (checkpoint.save_ranked)
    "checkpoint*.pt.prev",
    ".checkpoint*.tmp",  # what a kill during an atomic write leaves
    *(f".{name}.*tmp" for name in RUN_FILES),
)
RUN_DIRS = ("tensorboard",)


def _nearest_existing(path: Path) -> Path:
    """Return path or its nearest ancestor that exists (the folder a mkdir would write in)."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(folder: Path, out: Path, key: str) -> None:
    """Create and remove a temporary file in folder; UserError when that fails."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise UserError(f"{key} {out}: cannot write in {folder} ({why})") from None


def check_out(out: Path, *, resume: bool, force: bool, key: str = "--out") -> None:
    """UserError (one line) when out is a file, cannot be created/written, or is a non-empty
    folder and neither resume nor force (a previous run would be overwritten)."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UserError(f"{key} {out}: is a file, not a folder; name a folder")
        _probe_writable(out, out, key)
        if resume or force:
            return
        held = sorted(p.name for p in out.iterdir() if p.name != LOCK)
        if held:
            shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
            raise UserError(
                f"{key} {out}: folder is not empty ({shown}); name a new folder, "
                "or --force to replace the run in it, or --resume to continue it"
            )
        return
    base = _nearest_existing(out)
    if not base.is_dir():
        raise UserError(f"{key} {out}: cannot create it, {base} is a file; name a folder")
    _probe_writable(base, out, key)


def clear_run_files(out: Path) -> None:
    """Remove a previous run's files (config.json, steps.jsonl, evals.jsonl, summary.json,
    model.pt, checkpoint*.pt(.prev), label_counts.csv, label_distribution.png, tensorboard/,
    and the lock) — what --force replaces; never other files.

    The lock stays while this process holds it; one another process holds is refused
    (UserError naming that process).
    """
    if not out.is_dir():
        return
    _remove_free_lock(out)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for pattern in RUN_GLOBS:
        for p in out.glob(pattern):
            if p.is_file():
                p.unlink()
    for name in RUN_DIRS:
        d = out / name
        if d.is_dir() and not d.is_symlink():
            shutil.rmtree(d)
        elif d.is_symlink() or d.is_file():
            d.unlink()


def _holder(path: Path) -> str:
    """Return the pid written in a lock file, or "unknown"."""
    try:
        text = path.read_text().strip()
    except (OSError, ValueError):  # ValueError: a lock file that is not UTF-8 text
        return "unknown"
    return text if text.isdigit() else "unknown"


def _busy(out: Path, path: Path) -> UserError:
    return UserError(f"--out {out}: another scadles process is writing it (pid {_holder(path)})")


def _remove_free_lock(out: Path) -> None:
    """Remove out/.lock unless a live process holds it: this one (the lock stays), or another
    (UserError)."""
    path = out / LOCK
    if _holder(path) == str(os.getpid()):
        return
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(out, path) from None
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking fcntl lock on out/.lock while a run writes; another
    process trying the same folder gets UserError('--out DIR: another scadles process is
    writing it (pid N)'). The lock file is removed on exit."""
    path = out / LOCK
    for _ in range(10):  # retry while a finishing holder unlinks the file we opened
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            why = e.strerror or type(e).__name__
            raise UserError(f"--out {out}: cannot create {path.name} ({why})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _busy(out, path) from None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # we locked a file that was unlinked meanwhile: take the new one
    else:
        raise _busy(out, path)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
