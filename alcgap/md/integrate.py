"""Integration of a protocol on every rank: the system set up, then stepped segment by segment.

The system comes from the atoms (``start.data`` kept, so ``in.lammps`` reads it back) or from a
checkpoint's restart. Each segment runs under its own ensemble fix, in chunks that end on every
sampled, monitored or checkpointed step, where the run is observed and may stop. A LAMMPS error
ends the run early with its message; one seen on a single rank aborts the whole job, since the
other ranks would wait in a collective forever.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ase import Atoms

from alcgap.md.attempts import promote_attempt
from alcgap.md.checkpoint import write_checkpoint
from alcgap.md.lammps_run import LammpsRun
from alcgap.md.lammps_system import (THERMO, adaptive_timestep_fix, create_atoms, ensemble_fix, scatter_velocities,
                                     setup_commands)
from alcgap.md.observe import observe
from alcgap.md.protocols import Segment, total_steps
from alcgap.md.result import MDResult
from alcgap.structures import lammps_path


@dataclass
class _Progress:
    """Steps done, and the end of the chunk being run (what an error message names)."""

    step: int
    target: int

    def __str__(self) -> str:
        return f"steps {self.step}-{self.target}"


@dataclass(frozen=True)
class _Span:
    """Segment ``index`` of the protocol: steps ``start`` to ``stop`` of the whole run."""

    index: int
    segment: Segment
    start: int
    stop: int


def integrate(run: LammpsRun, atoms: Atoms, segments: Sequence[Segment], *, timestep: float, seed: int,
              sample_every: int, thermo_every: int, result: MDResult, velocities: bool = False,
              charges: dict[str, float] | None = None, resume: dict | None = None) -> None:
    """Set up the system and step ``segments`` (collective); ``result`` says how far it got and
    why it stopped. ``resume``: the checkpoint to continue from (see :mod:`alcgap.md.checkpoint`)."""
    # imported here: the lammps package loads only after lammps_class() has loaded its MPI
    # library, which run_md does first
    from lammps.core import MPIAbortException

    if resume is not None:
        _continue_from_restart(run, resume)
    else:
        _create_system(run, atoms, charges)
    _attach_forces(run, sample_every)
    run.command(f"timestep {timestep / 1000.0}")
    if resume is None:  # (a restart holds the velocities)
        _initial_velocities(run, atoms, segments, seed, own=velocities)
    run.command(f"thermo_style custom {THERMO}")
    run.command(f"thermo {thermo_every}")
    if run.max_displacement:
        run.command(adaptive_timestep_fix(timestep, run.max_displacement, run.max_energy_change))
        result.smallest_timestep_fs = timestep
        result.elapsed_fs = 0.0
    start = resume["step"] if resume is not None else 0
    progress = _Progress(step=start, target=start)
    try:
        _step_protocol(run, segments, timestep, sample_every, result, progress, fresh=resume is None)
    except MPIAbortException as err:
        _abort_after_one_rank_error(run, result, f"LAMMPS error in {progress}: {err.message}")
    except Exception as err:  # LAMMPS errors seen by all ranks, e.g. "Lost atoms"
        if type(err) is not Exception:
            raise
        result.stopped_early, result.stop_reason = True, f"LAMMPS error in {progress}: {err}"
    finally:
        run.write_input()


# --------------------------------------------------------------------------- set-up


def _continue_from_restart(run: LammpsRun, resume: dict) -> None:
    # positions, velocities, box, masses, charges and the thermostat's state; atom sorting is
    # not in a restart file and would reorder the per-rank atoms (and the force sums)
    run.lmp.command(f"read_restart {lammps_path(resume['restart'])}")
    run.lmp.command("atom_modify sort 0 0.0")
    run.input_lines = list(resume["input_lines"]) + [f"# continued at step {resume['step']} from {resume['restart']}"]


def _create_system(run: LammpsRun, atoms: Atoms, charges: dict[str, float] | None) -> None:
    """Box, masses, atoms and their charges; ``start.data`` written, and read back by ``in.lammps``."""
    lmp = run.lmp
    atom_style = "atomic" if charges is None else "charge"
    for line in setup_commands(atoms, run.species, atom_style):
        lmp.command(line)
    create_atoms(lmp, atoms, run.species)
    for i, symbol in enumerate(run.species, start=1):
        if charges is not None and symbol in charges:
            lmp.command(f"set type {i} charge {charges[symbol]}")  # start.data keeps them
    if run.workdir is not None:
        lmp.command(f"write_data {lammps_path(run.workdir / 'start.data')} nocoeff")
    # in.lammps reads the atoms back from start.data, so a user can rerun it by hand
    run.input_lines += [line for line in setup_commands(atoms, run.species, atom_style)[:4]] + ["read_data start.data"]


def _attach_forces(run: LammpsRun, sample_every: int) -> None:
    """The back-end's commands and callback; its variance on every monitored and sampled step."""
    for line in run.backend.input_lines():
        run.command(line)
    run.backend.attach(run.lmp, run.species)
    every = run.monitor_every
    run.backend.set_variance_steps(lambda s: bool(every and s % every == 0) or s % sample_every == 0)


def _initial_velocities(run: LammpsRun, atoms: Atoms, segments: Sequence[Segment], seed: int, own: bool) -> None:
    """The atoms' ``own`` velocities, or Gaussian ones at the first segment's ``t_start`` (no net momentum)."""
    if own:
        scatter_velocities(run.lmp, atoms)
    else:
        run.command(f"velocity all create {segments[0].t_start} {seed} dist gaussian mom yes rot no")


# --------------------------------------------------------------------------- stepping


def _spans(segments: Sequence[Segment]) -> Iterator[_Span]:
    begin = 0
    for index, segment in enumerate(segments):
        yield _Span(index, segment, begin, begin + segment.steps)
        begin += segment.steps


def _step_protocol(run: LammpsRun, segments: Sequence[Segment], timestep: float, sample_every: int,
                   result: MDResult, progress: _Progress, fresh: bool) -> None:
    """Every segment not done yet under its own ensemble fix; returns early when a monitor stops
    the run. A ``fresh`` run (not continued) is observed at step 0 first."""
    if fresh:
        run.command("run 0 post no")
        run.backend.check()
        if run.monitor and observe(run, 0, sample=False, monitored=True, result=result, segment=None):
            return
    last = total_steps(segments)
    for span in _spans(segments):
        if span.stop <= progress.step:
            continue  # done before the checkpoint this run continues from
        # the same fix ID and style after read_restart takes back its saved state
        run.command(ensemble_fix(span.segment, timestep))
        if _step_segment(run, span, last, sample_every, result, progress):
            return
        # before the unfix: LAMMPS' econserve still reads the removed thermostat (a segfault)
        result.final_thermo = run.thermo()
        run.command("unfix alcgap_md")


def _step_segment(run: LammpsRun, span: _Span, last: int, sample_every: int, result: MDResult,
                  progress: _Progress) -> bool:
    """Chunks up to the segment's end, each observed and checkpointed where due; True when a
    monitor stops the run."""
    every, checkpoint_every = run.monitor_every, run.checkpoint_every
    first = True
    while progress.step < span.stop:
        progress.target = _next_stop(progress.step, span.stop, sample_every, every, checkpoint_every)
        # setup (pre yes) is needed on the first run after a fix changes; skipping it segfaults
        _run_chunk(run, span, "yes" if first else "no", result, progress)
        first = False
        step = progress.step
        sample, monitored = step % sample_every == 0, bool(every) and step % every == 0
        into_segment = (span.index, span.segment, step - span.start)
        if (sample or monitored) and observe(run, step, sample, monitored, result, into_segment):
            return True
        if checkpoint_every and step % checkpoint_every == 0 and step < last:
            write_checkpoint(run, step, span.index, result)
    return False


def _next_stop(step: int, stop: int, *periods: int | None) -> int:
    candidates = [stop] + [(step // p + 1) * p for p in periods if p]
    return min(candidates)


def _run_chunk(run: LammpsRun, span: _Span, pre: str, result: MDResult, progress: _Progress) -> None:
    """LAMMPS steps from ``progress.step`` to ``progress.target``, timed; the adaptive timestep's figures."""
    tick, tick_cpu = time.perf_counter(), time.process_time()
    run.command(f"run {progress.target - progress.step} start {span.start} stop {span.stop} pre {pre} post no")
    run.clock["run_s"] += time.perf_counter() - tick
    run.clock["run_cpu_s"] += time.process_time() - tick_cpu
    run.backend.check()
    if run.max_displacement:
        dt_fs = float(run.lmp.extract_global("dt")) * 1000.0
        result.smallest_timestep_fs = min(result.smallest_timestep_fs or dt_fs, dt_fs)
        result.elapsed_fs = float(run.lmp.extract_global("atime")) * 1000.0
    progress.step = result.steps_done = progress.target


def _abort_after_one_rank_error(run: LammpsRun, result: MDResult, reason: str) -> None:
    """An error on one rank only (e.g. "Pair distance < table inner cutoff"): the other ranks
    wait in a collective forever, so this rank reports and aborts the whole job."""
    result.stopped_early, result.stop_reason = True, reason
    if run.comm.size > 1:
        if result.output_dir and run.workdir is not None:
            # this rank alone knows: it promotes the attempt (rank 0's open files move with it);
            # where the pair straddles two ranks' domains both may get here at once
            try:
                (run.workdir / "result.json").write_text(json.dumps(result.to_dict(), indent=1))
            except OSError:
                pass
            promote_attempt(run.workdir, Path(result.output_dir))
        run.comm.Abort(3)
