"""What a run records on its sampled and monitored steps.

Sampled steps (every ``sample_every``) go to ``trajectory.xyz``; on monitored steps rank 0 runs
the monitors and every rank takes its verdict, so all stop at the same step. Flagged frames go
to ``flagged.xyz`` with their reasons, every monitored step is one line of ``monitor.jsonl``,
and the figures of :class:`~alcgap.md.result.MDResult` (shortest pairs, largest variance, the
clustering verdict, the temperature reached per segment) grow with each observed step.
"""

from __future__ import annotations

import json
import time

import numpy as np
from ase import Atoms

from alcgap.md.lammps_run import LammpsRun
from alcgap.md.monitors import Verdict
from alcgap.md.result import MDResult
from alcgap.structures import pair_name


def observe(run: LammpsRun, step: int, sample: bool, monitored: bool, result: MDResult, segment) -> bool:
    """Gather the frame, write it, run the monitors; True if the run must stop. ``segment``:
    (index, Segment, steps into it), or None before the first step."""
    tick = time.perf_counter()
    try:
        return _observe_frame(run, step, sample, monitored, result, segment)
    finally:
        run.clock["observe_s"] += time.perf_counter() - tick


def _observe_frame(run: LammpsRun, step: int, sample: bool, monitored: bool, result: MDResult, segment) -> bool:
    atoms = run.frame(step, want_variance=True)
    result.peak_temperature = max(atoms.info["temperature"], result.peak_temperature or 0.0)
    if segment is not None:
        _record_segment_temperature(atoms, segment, result)
    stop_reason = judge(run, atoms, step, result) if monitored and run.monitor else None
    if sample:
        run.write("trajectory.xyz", atoms)
        result.n_frames += 1
        if run.keep_frames:
            result.frames.append(atoms)
    if stop_reason:
        result.stopped_early, result.stop_reason = True, f"step {step}: {stop_reason}"
        result.final_thermo = run.thermo()
        return True
    return False


def _record_segment_temperature(atoms: Atoms, segment, result: MDResult) -> None:
    """Tag the frame with its segment and target temperature; add its temperature to the
    segment's running mean."""
    index, seg, into = segment
    atoms.info.update(md_segment=index, md_target_temperature=seg.target_temperature(into))
    while len(result.segment_temperatures) <= index:
        result.segment_temperatures.append({"t_start": None, "t_end": None, "mean": 0.0, "n": 0})
    record = result.segment_temperatures[index]
    record.update(t_start=seg.t_start, t_end=seg.t_end, n=record["n"] + 1)
    record["mean"] += (atoms.info["temperature"] - record["mean"]) / record["n"]


def judge(run: LammpsRun, atoms: Atoms, step: int, result: MDResult) -> str | None:
    """Monitors on rank 0; the verdict is broadcast so every rank stops at the same step.
    Returns why the run must stop, or None."""
    verdict: Verdict | None = run.monitor.check(atoms, step) if run.comm.rank == 0 else None
    verdict = run.comm.bcast(verdict, root=0)
    _add_verdict(verdict, step, result)
    if verdict.stop_reason:
        verdict.flag_reasons.append(f"stop: {verdict.stop_reason}")
    if verdict.flag_reasons:
        flagged = verdict.annotate(atoms.copy())
        flagged.calc = atoms.calc
        run.write("flagged.xyz", flagged)
        result.n_flagged += 1
    if run.writer:
        _log_monitored_step(run, atoms, step, verdict)
    return verdict.stop_reason


def _add_verdict(verdict: Verdict, step: int, result: MDResult) -> None:
    """The run's figures so far, with one more monitored frame."""
    for pair, r in verdict.min_distances.items():
        key = pair_name(pair)
        result.min_distances[key] = min(r, result.min_distances.get(key, np.inf))
    if verdict.max_variance is not None:
        result.max_variance = max(verdict.max_variance, result.max_variance or 0.0)
    result.n_monitored += 1
    result.n_flagged_atoms += verdict.n_flagged_atoms
    if verdict.clustered:
        result.n_clustered += 1
        if result.first_clustered_step is None:
            result.first_clustered_step, result.first_clustered = step, verdict.clustered


def _log_monitored_step(run: LammpsRun, atoms: Atoms, step: int, verdict: Verdict) -> None:
    """One line of ``monitor.jsonl``."""
    line = {"step": step, "time_fs": atoms.info.get("time_fs"), "temperature": atoms.info.get("temperature"),
            "conserved_eV": atoms.info.get("conserved_energy"), "max_variance": verdict.max_variance,
            "clustered": verdict.clustered, "flags": verdict.flag_reasons,
            "min_distances": {pair_name(p): r for p, r in verdict.min_distances.items()}}
    with open(run.workdir / "monitor.jsonl", "a") as stream:
        stream.write(json.dumps(line) + "\n")
