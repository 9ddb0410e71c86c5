"""Checkpoints of a campaign: the run directory's ``state.json`` files, written atomically.

Each iteration folder holds a ``state.json`` listing the stages that finished, with what they
produced (paths inside the run directory written relative to it, ``@run/...``, so that the
directory can move and resume; figures). A stage is marked finished only after
its outputs are on disk, and every file is written to a temporary name and renamed, so a
campaign killed at any moment leaves either the old or the new state, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import ase.io


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    return write_atomic(path, json.dumps(data, indent=1, default=str))


def write_frames_atomic(path: str | os.PathLike, frames) -> Path:
    """extxyz written atomically (an empty list gives an empty file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".xyz")
    os.close(handle)
    try:
        if frames:
            ase.io.write(tmp, list(frames), format="extxyz")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_frames(path: str | os.PathLike) -> list:
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return []
    return ase.io.read(path, index=":", format="extxyz")


#: how a checkpoint writes a path inside the run directory: relative to it, behind this prefix,
#: so that a run directory can move (another mount point, another login node) and resume
RUN_PREFIX = "@run/"


def relocatable(data: Any, run_dir: str | os.PathLike) -> Any:
    """``data`` with every string that is a path inside ``run_dir`` written as ``@run/<relative>``."""
    root = os.path.abspath(run_dir) + os.sep
    if isinstance(data, dict):
        return {key: relocatable(value, run_dir) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [relocatable(value, run_dir) for value in data]
    if isinstance(data, str) and (data.startswith(root) or data == root[:-1]):
        return RUN_PREFIX + data[len(root):]
    return data


def located(data: Any, run_dir: str | os.PathLike) -> Any:
    """The inverse of :func:`relocatable`, for the run directory where it is now."""
    if isinstance(data, dict):
        return {key: located(value, run_dir) for key, value in data.items()}
    if isinstance(data, list):
        return [located(value, run_dir) for value in data]
    if isinstance(data, str) and data.startswith(RUN_PREFIX):
        return os.path.join(os.path.abspath(run_dir), data[len(RUN_PREFIX):]).rstrip(os.sep)
    return data


def read_run_json(path: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> Any:
    """A JSON file the run wrote with :func:`relocatable` paths (``summary.json``, an iteration's
    ``metrics.json``), its paths located in ``run_dir`` (default: the file's folder)."""
    path = Path(path)
    return located(json.loads(path.read_text()), path.parent if run_dir is None else run_dir)


def iteration_dir(run_dir: str | os.PathLike, iteration: int) -> Path:
    return Path(run_dir) / f"iter-{iteration:03d}"


class IterationState:
    """The finished stages of one iteration, persisted in ``iter-NNN/state.json``."""

    def __init__(self, run_dir: str | os.PathLike, iteration: int):
        self.run_dir = Path(run_dir)
        self.iteration = iteration
        self.dir = iteration_dir(run_dir, iteration)
        self.path = self.dir / "state.json"
        self.stages: dict[str, dict] = {}
        if self.path.exists():
            self.stages = located(json.loads(self.path.read_text()).get("stages", {}), self.run_dir)

    def done(self, stage: str) -> bool:
        return stage in self.stages

    def get(self, stage: str) -> dict:
        return self.stages[stage]

    def finish(self, stage: str, **outputs) -> dict:
        """Mark a stage finished with its outputs (JSON-serialisable) and persist at once."""
        self.stages[stage] = outputs
        write_json_atomic(self.path, {"iteration": self.iteration, "stages": relocatable(self.stages, self.run_dir)})
        return outputs


def finished_iterations(run_dir: str | os.PathLike) -> list[int]:
    """Iterations whose ``judge`` stage finished, in order."""
    done = []
    for folder in sorted(Path(run_dir).glob("iter-[0-9][0-9][0-9]")):
        state = IterationState(run_dir, int(folder.name.split("-")[1]))
        if state.done("judge"):
            done.append(state.iteration)
    return done
