"""External programs under a watchdog, and stopping what they started (Linux ``/proc``).

The bottom layer of alcgap: it imports nothing from the package. Two kinds of callers use it:
the adapters of external programs (cp2k.psmp, gap_fit), which run one command in a directory of
its own with :func:`run_watched`, and the run lock (:mod:`alcgap.workflow.lock`), which finds
and stops what a dead driver left running with :func:`proc_stat`, :func:`all_pids` and
:func:`stop_processes`.

Without ``/proc`` (not Linux) the readers see nothing: a process tree is its root alone, and no
process counts as alive once signalled.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

PROC = Path("/proc")


# ---------------------------------------------------------------------------------------------
# Reading /proc


class ProcStat(NamedTuple):
    """The fields of ``/proc/<pid>/stat`` that say where a process belongs."""

    #: R, S, D, T (stopped), Z (zombie: ended, only its parent's wait is missing), ...
    state: str
    ppid: int
    pgid: int
    sid: int


def proc_stat(pid: int) -> ProcStat | None:
    """(state, ppid, pgid, sid) of a process from Linux ``/proc``; None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may itself hold spaces and ")"
    fields = text.rsplit(")", 1)[1].split()
    return ProcStat(fields[0], int(fields[1]), int(fields[2]), int(fields[3]))


def alive(pid: int) -> bool:
    """Is ``pid`` running (a zombie has ended: only its parent's wait is missing)?"""
    stat = proc_stat(pid)
    return stat is not None and stat.state != "Z"


def all_pids() -> list[int]:
    """Every pid in ``/proc`` now (empty where there is no ``/proc``)."""
    if not PROC.is_dir():
        return []
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def environment_entries(pid: int) -> list[bytes] | None:
    """The ``KEY=value`` entries of a process's environment as it started (``/proc/<pid>/environ``);
    None when it is gone or not ours to read. A process that rewrites its command line
    (setproctitle) may have overwritten them."""
    try:
        return (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None


def ancestors(pid: int) -> set[int]:
    """``pid`` and its parents up to (not including) init."""
    out = set()
    while pid > 1 and (stat := proc_stat(pid)) is not None:
        out.add(pid)
        pid = stat.ppid
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, parents before children (only ``pid`` where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for entry in all_pids():
        try:
            stat = proc_stat(entry)
        except (ValueError, IndexError):  # a stat line not in the expected form
            continue
        if stat is not None:
            children.setdefault(stat.ppid, []).append(entry)
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


# ---------------------------------------------------------------------------------------------
# Stopping processes


def signal_each(pids: Iterable[int], sig: int, groups: Iterable[int] = ()) -> list[int]:
    """Send ``sig`` to each process group of ``groups``, then to each of ``pids``; the pids that
    took it (one that is gone, or not ours, is skipped)."""
    for group in groups:
        try:
            os.killpg(group, sig)
        except OSError:
            pass
    took = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            took.append(pid)
        except OSError:
            pass
    return took


def wait_gone(pids: Iterable[int], timeout: float, poll: float = 0.1) -> list[int]:
    """Wait up to ``timeout`` seconds for ``pids`` to end; those still alive then."""
    deadline = time.monotonic() + timeout
    left = [pid for pid in pids if alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(poll)
        left = [pid for pid in left if alive(pid)]
    return left


def stop_processes(pids: list[int], grace: float = 5.0) -> list[int]:
    """SIGTERM ``pids``, SIGKILL those alive after ``grace`` seconds; the pids that were signalled."""
    signalled = signal_each(pids, signal.SIGTERM)
    signal_each(wait_gone(signalled, grace), signal.SIGKILL)
    return signalled


def stop_tree(process: subprocess.Popen, grace: float = 5.0, group: bool = True) -> None:
    """Stop a run and everything it started: SIGTERM, then SIGKILL to what is left after ``grace``
    seconds. ``group``: the run leads a process group of its own (started in a new session),
    which is signalled as a whole: with a launcher (mpiexec, srun) the ranks are children, and
    killing only the launcher leaves them running.

    The descendants are also signalled by pid: an OpenMPI singleton (cp2k.psmp without mpiexec)
    starts an ``orted`` in a session of its own, out of reach of the process-group signal.
    """
    tree = process_tree(process.pid)
    groups = [process.pid] if group else []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        signal_each(tree, sig, groups)
        # then SIGCONT (to the group, or without one to each pid): a stopped process (a hung run
        # may be one) acts on a SIGTERM only once resumed
        signal_each([] if group else tree, signal.SIGCONT, groups)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        if not wait_gone(tree[1:], grace, poll=0.05):
            return


# ---------------------------------------------------------------------------------------------
# Running one program under a watchdog


@dataclass
class RunResult:
    """How one watched process ended: its exit code (None if it had to be killed and never told),
    whether the walltime killed it, and whether it was killed as hung."""

    returncode: int | None
    timed_out: bool = False
    hung: bool = False


def run_watched(command: Sequence[str], directory: str | os.PathLike, log: str, *,
                env: dict[str, str] | None = None, walltime: float | None = None,
                hang_timeout: float | None = None, watched: Sequence[str] = (),
                new_session: bool = True) -> RunResult:
    """Run ``command`` in ``directory`` with stdout and stderr to the file ``directory/log``.

    After ``walltime`` seconds (None: never), or once none of the files ``watched`` (names in
    ``directory``) has grown for ``hang_timeout`` seconds (None: never), the run is stopped with
    :func:`stop_tree`, as it is when this call is interrupted. ``new_session``: the run leads a
    session and process group of its own, so that everything it starts is stopped with it.
    """
    directory = Path(directory)
    with open(directory / log, "wb") as output:
        process = subprocess.Popen(
            list(command), cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=new_session,
        )
        try:
            return _watch(process, directory, walltime, hang_timeout, tuple(watched), new_session)
        except BaseException:
            stop_tree(process, group=new_session)
            raise


def _watch(process: subprocess.Popen, directory: Path, walltime: float | None, hang_timeout: float | None,
           watched: tuple[str, ...], group: bool) -> RunResult:
    start = time.monotonic()
    deadline = start + walltime if walltime is not None else math.inf
    # poll often enough to kill within a few percent of hang_timeout, rarely enough to cost nothing
    poll = min(1.0, hang_timeout / 10.0) if hang_timeout else walltime
    sizes, last_growth = _sizes(directory, watched), start
    while True:
        now = time.monotonic()
        try:
            wait = None if poll is None else max(0.0, min(poll, deadline - now))
            return RunResult(process.wait(timeout=wait))
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now >= deadline:
            stop_tree(process, group=group)
            return RunResult(process.returncode, timed_out=True)
        if hang_timeout is not None:
            current = _sizes(directory, watched)
            if current != sizes:
                sizes, last_growth = current, now
            elif now - last_growth >= hang_timeout:
                stop_tree(process, group=group)
                return RunResult(process.returncode, hung=True)


def _sizes(directory: Path, names: tuple[str, ...]) -> tuple[int, ...]:
    """Sizes of the watched files (-1: not there yet)."""
    return tuple(os.stat(directory / name).st_size if (directory / name).exists() else -1 for name in names)
