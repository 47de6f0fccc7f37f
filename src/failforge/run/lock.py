"""One writer per run directory: ``RUN_DIR/run.lock`` names its holder.

The holder keeps an exclusive ``flock`` on the file for as long as it runs, so the
kernel releases the lock the moment the process dies, however it dies. The file's
content says who holds it (pid, host, process start, wall-clock start, command) so
that a refusal can name the holder. A lock whose holder is gone (same host, and no
process with that pid and start time) is taken over; the caller logs the takeover.
A lock written on another host is never taken over: this host cannot tell whether
that process still runs, so the refusal says which file to delete once it does not.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from failforge.errors import ConfigError

LOCK_FILE = "run.lock"


class RunLocked(ConfigError):
    """Another process holds the run directory."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    #: wall-clock time the holder took the lock
    started_at: float
    command: str
    #: the kernel's start time of the process (Linux), so a reused pid is not mistaken for the holder
    process_start: str | None = None

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        return f"pid {self.pid} on {self.host} since {when} (failforge {self.command})"

    def alive_here(self) -> bool:
        """True when this host runs the process that wrote the lock."""
        if self.host != socket.gethostname():
            return True  # not ours to judge
        current = process_start(self.pid)
        if current is None:
            return _pid_exists(self.pid)
        return self.process_start is None or current == self.process_start


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None when unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its closing one
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        data = json.loads(raw.decode("utf-8"))
        return Holder(**data)
    except (ValueError, TypeError):
        return None


class RunLock:
    """The exclusive right to write one run directory. Use ``RunLock.acquire``."""

    def __init__(self, path: Path, fd: int, holder: Holder, previous: Holder | None):
        self.path = path
        self.holder = holder
        #: a dead holder whose lock this one took over (the caller logs it)
        self.previous = previous
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, run_dir: Path, command: str) -> "RunLock":
        path = Path(run_dir) / LOCK_FILE
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise ConfigError(f"run directory {run_dir}: cannot create {LOCK_FILE} ({e.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                for _ in range(20):  # the holder writes its name just after it takes the lock
                    if holder is not None:
                        break
                    time.sleep(0.05)
                    holder = _read_holder(fd)
                os.close(fd)
                who = holder.describe() if holder else "another process"
                raise RunLocked(f"run directory {run_dir} is in use by {who}; wait for it to end or stop it") from None
            if _same_file(fd, path):
                break
            os.close(fd)  # the previous holder removed the file as we opened it: open the new one
        previous = _read_holder(fd)
        if previous is not None and previous.alive_here() and previous.pid != os.getpid():
            os.close(fd)
            if previous.host != socket.gethostname():
                raise RunLocked(
                    f"run directory {run_dir} is locked by {previous.describe()}; "
                    f"if that run has stopped, delete {path} and try again"
                )
            raise RunLocked(f"run directory {run_dir} is in use by {previous.describe()}; wait for it to end or stop it")
        me = Holder(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=time.time(),
            command=command,
            process_start=process_start(os.getpid()),
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode("utf-8"), 0)
        os.fsync(fd)
        return cls(path, fd, me, previous if previous != me else None)

    def release(self) -> None:
        """Remove the lock file, then let go of the lock (in that order: see ``_same_file``)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
