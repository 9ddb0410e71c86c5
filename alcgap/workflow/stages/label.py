"""The label stage: structures to the reference, streamed, each label stored the moment it returns.

:func:`label_structure` is the app (it runs where the reference runs); :class:`Labeller` is the
driver's side: it skips what the store has, refuses pairs too close for the reference, and is the
only writer of the label store.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from alcgap.config import ConfigError
from alcgap.reference.base import Label, LabelStatus, Reference
from alcgap.reference.contacts import default_contact_limits, too_close_pairs
from alcgap.store import Provenance, fingerprint
from alcgap.structures import pair_name
from alcgap.workflow.checkpoint import JsonRecord, done_or_run
from alcgap.workflow.context import Run
from alcgap.workflow.futures import Pending

LABEL_FILE = "label.json"


class LabellingStopped(ConfigError):
    """The reference refused its input (an unknown basis, a bad keyword): every further label
    would fail the same way, so labelling stops with the program's own message."""


def label_to_dict(label: Label) -> dict[str, Any]:
    return {
        "status": label.status.value,
        "energy": label.energy,
        "forces": None if label.forces is None else np.asarray(label.forces).tolist(),
        "stress": None if label.stress is None else np.asarray(label.stress).tolist(),
        "reason": label.reason,
        "info": label.info,
    }


def label_from_dict(data: dict[str, Any]) -> Label:
    return Label(
        LabelStatus(data["status"]),
        energy=data["energy"],
        forces=None if data["forces"] is None else np.array(data["forces"]),
        stress=None if data["stress"] is None else np.array(data["stress"]),
        reason=data.get("reason", ""),
        info=data.get("info", {}),
    )


def _launch_here(reference: Reference, launcher: str | None, threads: int | None) -> None:
    """``launcher`` (a shell prefix such as ``srun -n $PARSL_NUM_RANKS``, environment variables
    expanded here, on the worker that Parsl gave the task's ranks) and ``threads`` override the
    launch settings of a DFT reference; they do not change the label."""
    settings = getattr(reference, "config", None)
    if launcher is None or not hasattr(settings, "launch_prefix"):
        return
    # "VAR=value ... mpiexec -n $PARSL_NUM_RANKS": assignments go to the environment
    words = shlex.split(os.path.expandvars(launcher))
    while words and "=" in words[0] and not words[0].startswith(("/", ".")):
        name, value = words.pop(0).split("=", 1)
        os.environ[name] = value
    update: dict[str, Any] = {"launch_prefix": words}
    if threads is not None:
        update["omp_threads"] = threads
    reference.config = settings.model_copy(update=update)


def label_structure(reference: Reference, atoms: Atoms, workdir: str, launcher: str | None = None,
                    threads: int | None = None, parsl_resource_specification: dict | None = None) -> tuple[Label, float, float]:
    """Label one structure in ``workdir``; return the label and when it started and finished.

    The label is kept in ``workdir/label.json`` before it is returned: if the driver dies before
    it stores the label, a resumed campaign finds the file and never repeats the calculation."""

    def compute() -> tuple[Label, float, float]:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        if hasattr(reference, "workdir"):
            reference.workdir = Path(workdir)
        _launch_here(reference, launcher, threads)
        started = time.time()
        label = reference.compute(atoms)
        return label, started, time.time()

    # a time-out or a hang may pass on a quieter node, and an input error is the settings' fault,
    # not the structure's: none of them is kept as this structure's final answer
    return done_or_run(
        JsonRecord(Path(workdir) / LABEL_FILE), compute,
        keep=lambda done: done[0].status not in (LabelStatus.TIMED_OUT, LabelStatus.HUNG, LabelStatus.INPUT_ERROR),
        encode=lambda done: {"label": label_to_dict(done[0]), "started": done[1], "finished": done[2]},
        decode=lambda held: (label_from_dict(held["label"]), held["started"], held["finished"]))


def check_reference(reference: Reference, parsl_resource_specification: dict | None = None) -> str:
    """``check_on: compute``: the reference's machine checks where its labels run (the worker's
    node); what it found (the data directory)."""
    return reference.check_here()


class Labeller:
    """The driver's side of labelling: one calculation per structure, stored as it returns."""

    def __init__(self, run: Run):
        self.run = run
        self._in_flight: set[str] = set()

    def label_dir(self, atoms: Atoms) -> Path:
        return self.run.run_dir / "labels" / self.run.settings_hash / fingerprint(atoms)

    def submit(self, pending: Pending, atoms: Atoms, provenance: Provenance, results: list) -> None:
        """Label ``atoms`` unless the store has it; store the label the moment it returns."""
        run = self.run
        row = run.store.reusable_row(atoms, run.settings_hash)
        if row is not None:
            results.append(row.status)
            return
        key = fingerprint(atoms)
        if key in self._in_flight:  # the same structure twice in one batch: one calculation
            return
        if provenance.origin.startswith("explore") and self._too_close(atoms, provenance, results):
            return  # dimer scans go short on purpose; the loop's picks may not
        self._in_flight.add(key)

        def store(outcome) -> None:
            label, started, finished = outcome
            self._in_flight.discard(key)
            run.board.label_done(label.ok, len(label.info.get("recovery", [])) if isinstance(label.info, dict) else 0)
            run.store.add(atoms, label, run.reference.name, run.settings_hash, provenance, started=started, finished=finished)
            results.append(label.status.value)
            if label.fatal:  # the reference's input is wrong for every structure: stop before the next
                raise LabellingStopped(f"{run.reference.name} refused its input ({provenance.origin}): {label.reason}; "
                                       "fix the reference settings, then resume")
            if not label.ok:
                run.log(f"[yellow]label failed[/] ({provenance.origin}): {label.status.value}: {label.reason[:200]}")

        run.board.label_submitted()
        pending.add(run.apps.label(run.reference, atoms, str(self.label_dir(atoms))), store)

    def _too_close(self, atoms: Atoms, provenance: Provenance, results: list) -> bool:
        """Store a pick with pairs too close for the reference as not labelled (and say so)."""
        run, fraction = self.run, self.run.config.label.contact_fraction
        contacts = too_close_pairs(atoms, default_contact_limits(run.config.species, fraction))
        if not contacts:
            return False
        c = contacts[0]
        reason = (f"{len(contacts)} pair(s) too close for the reference, shortest {pair_name(c.pair)} "
                  f"{c.distance:.3f} A < {c.limit:.3f} A (label.contact_fraction {fraction} x covalent radii): "
                  "not sent; the model went there")
        now = time.time()
        run.store.add(atoms, Label(LabelStatus.TOO_CLOSE, reason=reason), run.reference.name, run.settings_hash,
                      provenance, started=now, finished=now)
        results.append(LabelStatus.TOO_CLOSE.value)
        run.log(f"[yellow]not labelled[/] ({provenance.origin}): {reason}")
        return True

    def label_all(self, frames: Sequence[Atoms], provenances: Sequence[Provenance]) -> dict:
        pending, results = Pending(), []
        for atoms, provenance in zip(frames, provenances):
            self.submit(pending, atoms, provenance, results)
        pending.drain()
        return {"labelled": results.count("ok"), "failed": len(results) - results.count("ok"),
                "driver_s": round(pending.driver_seconds, 3)}
