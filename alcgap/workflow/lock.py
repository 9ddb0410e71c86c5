"""One driver per run directory, and nothing left running of a driver that died.

:class:`RunLock` holds an exclusive ``flock`` on ``<run>/driver.lock`` for as long as a driver
runs, and writes who holds it to ``<run>/driver.json`` (host, pid, process group, start time,
command). A second driver on the same run directory is refused at once, naming the holder. The
kernel drops the lock when the holder dies in any way (SIGKILL included), so a stale lock never
blocks a resume.

A driver killed without its ``finally`` (SIGKILL, an OOM kill, a lost login node) leaves its Parsl
worker pools running: a local provider starts them in process groups of their own, and they go
on with their tasks (MD writing into the task folders the resumed campaign is about to use).
The driver marks its environment with ``ALCGAP_RUN_DIR``, which everything it starts inherits;
:func:`stale_processes` finds, on this host, every process with that mark for the run directory,
and :func:`orphans_of` the dead driver's orphans that lost it (Parsl's interchange overwrites its
environment when it renames itself); :meth:`RunLock.acquire` stops them (SIGTERM, then SIGKILL after ``grace`` seconds) before the
resumed driver starts anything. Workers on other hosts (batch jobs) are not reached from here:
their scheduler ends them at their walltime, or ``scancel``/``qdel`` does, and the atomic
checkpoints make whatever they still write harmless (a finished stage is never re-read from a
task folder that is being rewritten).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from alcgap.config import ConfigError
from alcgap.workflow.state import write_json_atomic


class CampaignBusy(ConfigError):
    """Another driver is running this campaign."""


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, sid) of a process from Linux ``/proc``; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has ended; only its parent's wait is missing


def _ancestors(pid: int) -> set[int]:
    out = set()
    while pid > 1 and (stat := _stat(pid)) is not None:
        out.add(pid)
        pid = stat[1]
    return out


#: set by the driver that holds a run directory, to its real path; every process it starts
#: (Parsl's interchange and worker pools, MD tasks, CP2K) inherits it
RUN_MARKER = "ALCGAP_RUN_DIR"


def stale_processes(run_dir: str | os.PathLike) -> list[int]:
    """Pids on this host, other than this process and its ancestors, started for ``run_dir``: their
    environment holds ``ALCGAP_RUN_DIR=<run_dir>`` (Linux ``/proc``). A shell or an editor that
    merely looks at the run directory carries no such marker and is never touched."""
    marker = f"{RUN_MARKER}={os.path.realpath(run_dir)}".encode()
    mine = _ancestors(os.getpid())
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if marker in environment.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def orphans_of(owner: dict) -> list[int]:
    """Processes a dead driver started that lost their mark: Parsl's interchange renames itself
    (setproctitle), which overwrites its environment in ``/proc``. They are orphans (their parent
    died: reparented to init) in the dead driver's process group or session. A process whose
    parent still lives (a shell, a ``tee`` beside the driver) is never one."""
    if owner.get("host") != socket.gethostname() or not owner.get("pid") or _alive(int(owner["pid"])):
        return []
    groups = {owner.get("pgid"), owner.get("sid")} - {None}
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[1] == 1 and (stat[2] in groups or stat[3] in groups):
            found.append(int(entry.name))
    return sorted(found)


def stop_processes(pids: list[int], grace: float = 5.0) -> list[int]:
    """SIGTERM ``pids``, SIGKILL those alive after ``grace`` seconds; the pids that were signalled."""
    signalled = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    alive = list(signalled)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _alive(pid)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return signalled


class RunLock:
    """``with RunLock(run_dir) as lock:``: exclusive ownership of a run directory by this driver."""

    def __init__(self, run_dir: str | os.PathLike, grace: float = 5.0):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "driver.lock"
        self.owner_path = self.run_dir / "driver.json"
        self.grace = grace
        self._handle = None
        self._marker_before: str | None = None
        #: pids of a dead driver's processes that acquire() stopped
        self.stopped: list[int] = []

    def owner(self) -> dict | None:
        try:
            return json.loads(self.owner_path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            owner = self.owner() or {}
            raise CampaignBusy(
                f"{self.run_dir} is being run by another driver (pid {owner.get('pid', '?')} on "
                f"{owner.get('host', '?')}, since {owner.get('started', '?')}: {owner.get('command', '?')}); "
                "wait for it, or stop it (kill its pid) and resume") from None
        self._handle = handle
        # the last driver, if any, is dead (we hold its lock): end what it left running here; a
        # driver that ended cleanly removed its record, one that was killed left it
        previous = self.owner() or {}
        self.stopped = stop_processes(sorted(set(stale_processes(self.run_dir)) | set(orphans_of(previous))), self.grace)
        self._marker_before = os.environ.get(RUN_MARKER)
        os.environ[RUN_MARKER] = os.path.realpath(self.run_dir)
        write_json_atomic(self.owner_path, {
            "host": socket.gethostname(), "pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)})
        return self

    def release(self) -> None:
        if self._handle is not None:
            if self._marker_before is None:
                os.environ.pop(RUN_MARKER, None)
            else:
                os.environ[RUN_MARKER] = self._marker_before
            self.owner_path.unlink(missing_ok=True)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
