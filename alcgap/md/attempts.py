"""Where an MD run writes: an attempt folder of its own, promoted into ``output_dir`` at the end.

Each attempt writes into a hidden ``output_dir/.attempt-*`` folder and is promoted into
``output_dir`` when it ends (:func:`promote_attempt`), so two attempts (a stale worker's and a
resumed one's) never write into one file; a killed attempt leaves only its hidden folder, no
``result.json``. Without an ``output_dir`` rank 0 makes a temporary folder, removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: the files of a run in output_dir; result.json is promoted last: once it is there, the rest is
OUTPUTS = ("in.lammps", "start.data", "log.lammps", "aux.table", "trajectory.xyz", "flagged.xyz", "monitor.jsonl",
           "result.json")


@dataclass(frozen=True)
class RunFolders:
    """The folders of one run, the same on every rank."""

    #: this attempt's folder (or the temporary one): where LAMMPS and rank 0 write
    workdir: Path
    #: ``output_dir`` resolved, where the attempt is promoted (None: nothing is kept)
    final: Path | None
    #: rank 0's temporary folder, removed when the run ends (None on the other ranks, or with an output_dir)
    temporary: str | None = None


def open_run_folders(output_dir, comm) -> RunFolders:
    """Collective: a new attempt folder in ``output_dir`` (its promoted outputs of an earlier run
    removed), or a temporary folder without one."""
    if output_dir is None:
        temporary = tempfile.mkdtemp(prefix="alcgap-md-") if comm.rank == 0 else None
        return RunFolders(Path(comm.bcast(temporary, root=0)), None, temporary)
    final = Path(output_dir).resolve()
    attempt = None
    if comm.rank == 0:
        final.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:
            (final / name).unlink(missing_ok=True)
        attempt = tempfile.mkdtemp(prefix=".attempt-", dir=final)
    return RunFolders(Path(comm.bcast(attempt, root=0)), final)


def remove_killed_attempts(final: Path, workdir: Path) -> None:
    """Rank 0: the folders of attempts that were killed (read by now), all but ``workdir``."""
    for old in final.glob(".attempt-*"):
        if old != workdir:
            shutil.rmtree(old, ignore_errors=True)


def promote_attempt(attempt: Path, final: Path) -> None:
    """Move an attempt's files into ``final`` (each an atomic rename, ``result.json`` last) and
    remove the attempt's folder."""
    if not attempt.is_dir():
        return
    try:
        names = sorted((p.name for p in attempt.iterdir()), key=lambda name: name == "result.json")
    except FileNotFoundError:  # another rank that saw the same one-rank error promoted it first
        return
    for name in names:
        try:
            os.replace(attempt / name, final / name)
        except FileNotFoundError:
            pass
    shutil.rmtree(attempt, ignore_errors=True)
