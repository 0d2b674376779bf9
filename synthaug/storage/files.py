"""Writing files so that a crash or a second process never leaves a lie: atomic writes with the modes a plain
open() would give, damaged state files named in one line, and one advisory lock per folder."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from synthaug.core.errors import UserError

LOCK_FILE = ".synthaug.lock"
# Read once, at import (os.umask can only be read by setting it, which is not thread-safe later): files written
# through a temporary name get the mode a plain open() would give them, not mkstemp's 0600.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


def read_json(path: Path, what: str) -> dict:
    """A JSON object from a state file; a damaged one is a one-line error naming it (never a traceback)."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: damaged {what} ({type(exc).__name__}); delete it and rerun the command that wrote it") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: damaged {what} (not a JSON object); delete it and rerun the command that wrote it")
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def temp_dir_beside(path: Path) -> Path:
    """A fresh temporary directory next to `path`, to fill and then `replace_dir` into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(DIR_MODE)
    return tmp


def _moved_aside(path: Path) -> Path:
    """Where `replace_dir` keeps the version it replaces until the new one is in place."""
    return path.with_name(f".{path.name}.old")


def replace_dir(tmp: Path, path: Path) -> None:
    """Move a filled temporary directory to `path`, replacing what was there.

    Two renames (the old version aside, the new one in): a kill between them leaves no `path`, only `.<name>.old`, which
    the next call or `remove_stale_temps` puts back (`recover_dir`), so `path` is always a whole version, old or new."""
    path = Path(path)
    recover_dir(path)
    if path.exists():
        old = _moved_aside(path)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def recover_dir(path: Path) -> None:
    """Finish a `replace_dir` into `path` that a crash interrupted: killed between its renames, the old version comes back
    (the new one is a stale temporary directory); killed after them, the old version is deleted."""
    old = _moved_aside(Path(path))
    if not old.is_dir():
        return
    if Path(path).exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(old, path)


def remove_stale_temps(directory: Path) -> None:
    """Delete temporary files and directories left by a crash (`.<name>.*.tmp`), and recover each `replace_dir` it
    interrupted (`.<name>.old`)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for item in directory.glob(".*.tmp"):
        shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
    for old in directory.glob(".*.old"):
        recover_dir(old.with_name(old.name[1:-len(".old")]))


class FolderLock:
    """An advisory lock on a folder (`<folder>/.synthaug.lock`, fcntl.flock) that dies with its process.

    One writer per run directory or synthetic folder: a second is refused with one line naming the
    holder's PID, or waits (`wait=True`). Taken by the main process of an `accelerate launch`; its other
    ranks work under it. Temporary files are only ever cleaned up under the lock, so no live writer's
    files in flight are removed.

    `remove_unused`: a folder this lock made and in which nothing but the lock file was written (a command that failed
    before any work) is removed on release, while still held; a process queued on that lock file then takes the lock of
    the new one instead (it checks that the file it locked is still the folder's lock file).
    """

    def __init__(self, folder: Path, command: str, wait: bool = False, remove_unused: bool = False):
        self.folder, self.command, self.wait, self.remove_unused = Path(folder), command, wait, remove_unused
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None
        self.made_folder = False

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def __enter__(self) -> "FolderLock":
        while True:
            self.made_folder = not self.folder.is_dir()
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if not self.wait:
                    os.close(fd)
                    raise UserError(f"{self.folder}: in use by another synthaug process ({self.holder()}); "
                                    f"wait for it to finish, or pass --wait to queue behind it") from None
                print(f"{self.folder}: waiting for synthaug process {self.holder()} to finish", flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            if self._is_lock_file(fd):
                break
            os.close(fd)  # the holder removed its unused folder while we waited: lock the folder's new file
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()}, synthaug {self.command}\n".encode())
        self.fd = fd
        return self

    def _is_lock_file(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            if self.remove_unused and self.made_folder and [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
                with contextlib.suppress(OSError):  # a process that came meanwhile keeps the folder
                    self.path.unlink()
                    self.folder.rmdir()
            os.ftruncate(self.fd, 0)  # still held: an empty lock file says nobody holds it
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def check_free(self) -> None:
        """Refuse at once when another process holds the lock (every rank checks, so none waits on a refused main)."""
        if self.wait or not self.path.is_file():
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"{self.folder}: in use by another synthaug process ({self.holder()}); "
                            f"wait for it to finish, or pass --wait to queue behind it") from None
        finally:
            os.close(fd)
