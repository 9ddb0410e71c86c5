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
resumed driver starts anything.

A resume may never come, so a campaign's driver also starts a :func:`watch` process, in a session
of its own (a kill of the driver's process group does not reach it). It polls the driver once a
second; when the driver is gone without releasing its lock, it takes the lock and stops the same
processes, then exits. Without their interchange, the worker pools of batch jobs on other hosts
stop at Parsl's ``heartbeat_threshold`` (the site's ``executors.*.heartbeat_threshold``, 120 s
by default), which ends their jobs. Whatever they still write is harmless: every MD attempt
writes into a folder of its own, promoted only when it finishes, and a finished stage is never
re-read from a task folder.

Reading ``/proc`` and stopping processes is :mod:`alcgap.procs`; this module decides which.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from alcgap.config import ConfigError
from alcgap.procs import all_pids, alive, ancestors, environment_entries, proc_stat, stop_processes
from alcgap.workflow.state import write_json_atomic


class CampaignBusy(ConfigError):
    """Another driver is running this campaign."""


#: set by the driver that holds a run directory, to its real path; every process it starts
#: (Parsl's interchange and worker pools, MD tasks, CP2K) inherits it
RUN_MARKER = "ALCGAP_RUN_DIR"


def stale_processes(run_dir: str | os.PathLike) -> list[int]:
    """Pids on this host, other than this process and its ancestors, started for ``run_dir``: their
    environment holds ``ALCGAP_RUN_DIR=<run_dir>`` (Linux ``/proc``). A shell or an editor that
    merely looks at the run directory carries no such marker and is never touched."""
    marker = f"{RUN_MARKER}={os.path.realpath(run_dir)}".encode()
    mine = ancestors(os.getpid())
    found = []
    for pid in all_pids():
        if pid in mine:
            continue
        environment = environment_entries(pid)  # None: gone, or not ours to read
        if environment is not None and marker in environment:
            found.append(pid)
    return sorted(found)


def orphans_of(owner: dict) -> list[int]:
    """Processes a dead driver started that lost their mark: Parsl's interchange renames itself
    (setproctitle), which overwrites its environment in ``/proc``. They are orphans (their parent
    died: reparented to init) in the dead driver's process group or session. A process whose
    parent still lives (a shell, a ``tee`` beside the driver) is never one."""
    if owner.get("host") != socket.gethostname() or not owner.get("pid") or alive(int(owner["pid"])):
        return []
    groups = {owner.get("pgid"), owner.get("sid")} - {None}
    found = []
    for pid in all_pids():
        stat = proc_stat(pid)
        if stat is not None and stat.ppid == 1 and (stat.pgid in groups or stat.sid in groups):
            found.append(pid)
    return sorted(found)


def stop_what_was_left(run_dir: str | os.PathLike, owner: dict, grace: float = 5.0, rounds: int = 6) -> list[int]:
    """Stop what a dead driver of ``run_dir`` left running here (:func:`stale_processes` and
    :func:`orphans_of`), scanning again after each stop until nothing is left: a process that
    lost its mark is an orphan only once its parent (a worker pool) has been stopped."""
    stopped: list[int] = []
    for _ in range(rounds):
        left = sorted((set(stale_processes(run_dir)) | set(orphans_of(owner))) - set(stopped))
        left = [pid for pid in left if alive(pid)]
        if not left:
            break
        stopped += stop_processes(left, grace)
        time.sleep(0.2)
    return stopped


def _try_lock(path: Path, wait: float = 0.0):
    """An open handle on ``path`` holding its exclusive flock, or None if another process holds it
    for longer than ``wait`` seconds."""
    handle = open(path, "a+")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except OSError:
            if time.monotonic() >= deadline:
                handle.close()
                return None
            time.sleep(0.2)


def _read_owner(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def driver_of(run_dir: str | os.PathLike) -> dict | None:
    """The owner record of the driver that holds, or last held without releasing, ``run_dir``."""
    return _read_owner(Path(run_dir) / "driver.json")


def driver_running(owner: dict | None) -> bool:
    """Is the driver of this owner record running (on this host; elsewhere: taken as running)?"""
    if not owner:
        return False
    return owner.get("host") != socket.gethostname() or alive(int(owner.get("pid", 0)))


def watch(run_dir: str | os.PathLike, pid: int, poll: float = 1.0, grace: float = 5.0) -> list[int]:
    """Wait for driver ``pid`` of ``run_dir`` to end. If it ended without releasing the run (its
    ``driver.json`` still names it), stop what it left running on this host; the pids stopped."""
    run = Path(run_dir)
    while alive(pid) and (_read_owner(run / "driver.json") or {}).get("pid") == pid:
        time.sleep(poll)
    try:
        handle = _try_lock(run / "driver.lock")
    except OSError:  # the run directory is gone
        return []
    if handle is None:  # a new driver holds the run: it stops what is stale itself
        return []
    try:
        owner = _read_owner(run / "driver.json") or {}
        if owner.get("pid") != pid or alive(pid):  # released cleanly, or still running
            return []
        return stop_what_was_left(run, owner, grace)
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class RunLock:
    """``with RunLock(run_dir) as lock:``: exclusive ownership of a run directory by this driver.
    ``watchdog=True`` also starts :func:`watch` for this driver."""

    def __init__(self, run_dir: str | os.PathLike, grace: float = 5.0, watchdog: bool = False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "driver.lock"
        self.owner_path = self.run_dir / "driver.json"
        self.grace = grace
        self.watchdog = watchdog
        self._watcher: subprocess.Popen | None = None
        self._handle = None
        self._marker_before: str | None = None
        #: pids of a dead driver's processes that acquire() stopped
        self.stopped: list[int] = []

    def owner(self) -> dict | None:
        return _read_owner(self.owner_path)

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = _try_lock(self.path)
        if handle is None and self._owner_is_dead():
            # a dead driver's watchdog holds the lock while it stops what the driver left running
            handle = _try_lock(self.path, wait=self.grace + 10.0)
        if handle is None:
            owner = self.owner() or {}
            raise CampaignBusy(
                f"{self.run_dir} is being run by another driver (pid {owner.get('pid', '?')} on "
                f"{owner.get('host', '?')}, since {owner.get('started', '?')}: {owner.get('command', '?')}); "
                "wait for it, or stop it (kill its pid) and resume") from None
        self._handle = handle
        # the last driver, if any, is dead (we hold its lock): end what it left running here; a
        # driver that ended cleanly removed its record, one that was killed left it
        previous = self.owner() or {}
        self.stopped = stop_what_was_left(self.run_dir, previous, self.grace)
        self._marker_before = os.environ.get(RUN_MARKER)
        os.environ[RUN_MARKER] = os.path.realpath(self.run_dir)
        write_json_atomic(self.owner_path, {
            "host": socket.gethostname(), "pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)})
        if self.watchdog:
            environment = {k: v for k, v in os.environ.items() if k != RUN_MARKER}  # not a stale process itself
            with open(self.run_dir / "watchdog.log", "ab") as log:
                self._watcher = subprocess.Popen(
                    [sys.executable, "-m", "alcgap.workflow.lock", "watch", str(self.run_dir.resolve()),
                     str(os.getpid()), "--grace", str(self.grace)],
                    env=environment, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=log)
        return self

    def _owner_is_dead(self) -> bool:
        owner = self.owner() or {}
        return owner.get("host") == socket.gethostname() and bool(owner.get("pid")) and not alive(int(owner["pid"]))

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
        if self._watcher is not None:
            self._watcher.terminate()  # released cleanly: nothing to watch for
            self._watcher.wait(timeout=10)
            self._watcher = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alcgap.workflow.lock")
    commands = parser.add_subparsers(dest="command", required=True)
    watcher = commands.add_parser("watch", help="stop what driver PID of RUN_DIR leaves running when it dies")
    watcher.add_argument("run_dir")
    watcher.add_argument("pid", type=int)
    watcher.add_argument("--grace", type=float, default=5.0)
    args = parser.parse_args(argv)
    stopped = watch(args.run_dir, args.pid, grace=args.grace)
    if stopped:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} driver {args.pid} of {args.run_dir} died; stopped {len(stopped)} "
              f"process(es) it left running: {stopped}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
