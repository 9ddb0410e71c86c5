"""The labelling interface: every reference (DFT or classical) turns structures into labels.

A reference never raises for a calculation that fails on physical or numerical grounds: it
returns a :class:`Label` whose status says what went wrong and whose ``reason`` carries the
program's own message. Only misuse (bad settings, a missing program) raises, and that is caught
when the reference is built, before any expensive work starts.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

# Vacuum around an isolated atom or a dimer, Angstrom: far beyond any cutoff used here.
ISOLATED_BOX = 20.0


class LabelStatus(str, Enum):
    """Outcome of one reference calculation; only ``OK`` labels may be used for fitting.

    ``INPUT_ERROR``: the program refused its input (an unknown basis set, a bad keyword). The
    same input is built for every structure, so every further calculation would fail the same
    way: it is never retried, and labelling must stop (:attr:`Label.fatal`). ``HUNG``: the
    program stopped writing output for longer than allowed and was killed, long before its
    walltime. ``TIMED_OUT``: killed at the walltime. ``TOO_CLOSE``: an exploration structure with
    a pair closer than its contact limit, recorded but never sent to the reference.
    """

    OK = "ok"
    SCF_NOT_CONVERGED = "scf_not_converged"
    PROGRAM_ERROR = "program_error"
    INPUT_ERROR = "input_error"
    CRASHED = "crashed"
    TIMED_OUT = "timed_out"
    HUNG = "hung"
    #: never sent to the reference: a pair closer than its limit (alcgap.reference.contacts)
    TOO_CLOSE = "too_close"


#: failures that no retry can cure and that every other structure would share
FATAL_STATUSES = frozenset({LabelStatus.INPUT_ERROR})


@dataclass
class Label:
    """Energy (eV), forces (eV/A) and stress (eV/A^3, ASE Voigt order, periodic cells only)."""

    status: LabelStatus
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    reason: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is LabelStatus.OK

    @property
    def fatal(self) -> bool:
        """True when labelling must stop: the reference's input is wrong for every structure
        (``reason`` carries the program's own message). Fix the settings, then start again."""
        return self.status in FATAL_STATUSES

    def attach(self, atoms: Atoms) -> Atoms:
        """A copy of ``atoms`` carrying this label the ASE way (a SinglePointCalculator)."""
        if not self.ok:
            raise ValueError(f"cannot attach a failed label ({self.status.value}: {self.reason})")
        labelled = atoms.copy()
        results: dict[str, Any] = {"energy": self.energy}
        if self.forces is not None:
            results["forces"] = np.array(self.forces)
        if self.stress is not None:
            results["stress"] = np.array(self.stress)
        labelled.calc = SinglePointCalculator(labelled, **results)
        return labelled


def isolated(symbols: str, positions=None) -> Atoms:
    """Atoms in a large non-periodic box, centred: isolated atoms and dimers."""
    atoms = Atoms(symbols, positions=positions, cell=[ISOLATED_BOX] * 3, pbc=False)
    atoms.center()
    return atoms


class Reference(ABC):
    """Something that labels structures: CP2K, or a classical potential standing in for DFT."""

    #: short name used in provenance, e.g. "cp2k" or "lammps"
    name: str = "reference"

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that changes a label; JSON-serialisable. Hashed for provenance."""

    @abstractmethod
    def compute(self, atoms: Atoms) -> Label:
        """Label one structure. Returns a failed Label instead of raising on a failed run."""

    def settings_hash(self) -> str:
        text = json.dumps({"name": self.name, **self.settings()}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def label(self, structures: Iterable[Atoms]) -> list[Label]:
        return [self.compute(atoms) for atoms in structures]

    def isolated_atom_energy(self, symbol: str) -> float:
        """Energy (eV) of one atom alone in a large box."""
        label = self.compute(isolated(symbol))
        if not label.ok:
            raise RuntimeError(f"isolated {symbol} atom failed: {label.status.value}: {label.reason}")
        return float(label.energy)
