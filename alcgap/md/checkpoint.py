"""Checkpoints of an MD run: where a run started again with the same arguments continues.

Every ``checkpoint_every`` steps (with an ``output_dir``) a run writes ``output_dir/checkpoint/``:
a ``step-N`` folder with LAMMPS' ``write_restart`` and ``state.json`` (the step, the protocol
position, the run's figures so far and the sizes of its files), then ``latest.json`` pointing at
it. A run started again with the same arguments (:func:`run_signature`) continues from the last
one, on any number of ranks, and its files continue without a repeated or a missing frame.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from alcgap.md.lammps_run import LammpsRun
from alcgap.md.result import MDResult
from alcgap.structures import lammps_path

#: checkpoints of a run, inside its output_dir: ``step-NNNNNNNNN/`` folders and ``latest.json``
CHECKPOINTS = "checkpoint"
#: the files of a run up to a checkpoint: kept in the attempt's folder (they only grow), their
#: sizes recorded, cut back to those sizes by the attempt that continues
_KEPT = ("trajectory.xyz", "flagged.xyz", "monitor.jsonl", "start.data", "aux.table")
#: MDResult fields that describe the run so far (restored on resume); the rest is per attempt
_RESUMED = ("steps_done", "n_frames", "n_flagged", "min_distances", "max_variance", "first_clustered_step",
            "first_clustered", "n_clustered", "n_monitored", "n_flagged_atoms", "segment_temperatures",
            "peak_temperature")


def run_signature(atoms, force_field, segments, timestep, seed, sample_every, monitor, charges) -> str:
    """What makes two runs the same run: a checkpoint of another one is never continued."""

    def portable(value):  # the same run after its run directory moved: file names, not paths
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        if isinstance(value, dict):
            return {key: portable(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [portable(item) for item in value]
        return Path(value).name if isinstance(value, str) and os.sep in value else value

    xml = getattr(force_field, "xml", None)
    model = Path(xml).stat().st_size if xml and Path(xml).exists() else None
    data = {"symbols": atoms.get_chemical_symbols(), "positions": np.round(atoms.positions, 8).tolist(),
            "cell": np.round(atoms.cell.array, 8).tolist(), "force_field": portable(force_field), "model_bytes": model,
            "segments": [repr(s) for s in segments], "timestep": timestep, "seed": seed,
            "sample_every": sample_every, "monitor": portable(monitor), "charges": charges}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_checkpoint(run: LammpsRun, step: int, segment: int, result: MDResult) -> None:
    """Collective. LAMMPS' ``write_restart`` (positions, velocities, box, the thermostat's and
    barostat's own state) into a new ``step-N`` folder, with the step, the protocol position, the
    run's figures so far and the sizes of its files (which stay in the attempt's folder: nothing
    is copied, however long the trajectory), then ``latest.json`` pointing at it (an atomic rename:
    a kill at any moment leaves the previous checkpoint)."""
    folder, _, signature = run.checkpoints
    name = f"step-{step:09d}"
    staging = folder / f".{name}"
    if run.comm.rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    run.comm.Barrier()
    run.lmp.command(f"write_restart {lammps_path(staging / 'restart.lmp')}")
    if run.comm.rank == 0:
        sizes = {kept: (run.workdir / kept).stat().st_size for kept in _KEPT if (run.workdir / kept).exists()}
        state = {"step": step, "segment": segment, "signature": signature, "attempt": run.workdir.name,
                 "sizes": sizes, "result": {key: getattr(result, key) for key in _RESUMED},
                 "input_lines": run.input_lines}
        (staging / "state.json").write_text(json.dumps(state, indent=1))
        _make_latest(folder, staging, name, step)
    run.comm.Barrier()


def _make_latest(folder: Path, staging: Path, name: str, step: int) -> None:
    """Rank 0: the staged checkpoint becomes ``name`` and ``latest.json``; older ones go."""
    shutil.rmtree(folder / name, ignore_errors=True)
    os.replace(staging, folder / name)
    pointer = folder / ".latest.json"
    pointer.write_text(json.dumps({"checkpoint": name, "step": step}))
    os.replace(pointer, folder / "latest.json")
    for old in folder.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _latest(folder: Path) -> tuple[Path, dict] | None:
    """The folder and ``state.json`` of the checkpoint ``latest.json`` points at (None: unreadable)."""
    try:
        latest = json.loads((folder / "latest.json").read_text())
        where = folder / latest["checkpoint"]
        state = json.loads((where / "state.json").read_text())
    except (OSError, ValueError, KeyError):
        return None
    return where, state


def load_checkpoint(final: Path, signature: str, attempt: Path) -> dict | None:
    """Rank 0: the last checkpoint of this run in ``final/checkpoint`` (None: none, one of another
    run, or the attempt it belongs to is gone), its files cut back to the checkpoint's step into
    the new attempt's folder."""
    latest = _latest(final / CHECKPOINTS)
    if latest is None:
        return None
    where, state = latest
    source = final / state.get("attempt", "")
    if state.get("signature") != signature or not (where / "restart.lmp").exists() or not source.is_dir():
        return None
    if any(not (source / kept).exists() or (source / kept).stat().st_size < size for kept, size in state["sizes"].items()):
        return None
    for kept, size in state["sizes"].items():
        with open(source / kept, "rb") as reading, open(attempt / kept, "wb") as writing:
            writing.write(reading.read(size))
    # the continuing attempt owns the checkpoint from now on: its files are the ones it grows
    state["attempt"] = attempt.name
    (where / ".state.json").write_text(json.dumps(state, indent=1))
    os.replace(where / ".state.json", where / "state.json")
    return {**state, "restart": str(where / "restart.lmp")}


def flagged_to_checkpoint(final: Path) -> Path | None:
    """For a run that left no result (a rank killed, a node lost): the frames it flagged up to
    its last checkpoint, the part of its attempt's ``flagged.xyz`` that checkpoint vouches for,
    copied to ``flagged-to-checkpoint.xyz`` in ``final``; None without such a checkpoint."""
    latest = _latest(Path(final) / CHECKPOINTS)
    if latest is None:
        return None
    _, state = latest
    size = state.get("sizes", {}).get("flagged.xyz")
    source = Path(final) / state.get("attempt", "") / "flagged.xyz"
    if not size or not source.is_file() or source.stat().st_size < size:
        return None
    out = Path(final) / "flagged-to-checkpoint.xyz"
    with open(source, "rb") as reading, open(out.with_suffix(".part"), "wb") as writing:
        writing.write(reading.read(size))
    os.replace(out.with_suffix(".part"), out)
    return out


def restore_result(result: MDResult, resume: dict) -> None:
    """The figures of the run up to the checkpoint it continues from."""
    for key, value in resume["result"].items():
        setattr(result, key, value)
    result.resumed_from_step = resume["step"]
