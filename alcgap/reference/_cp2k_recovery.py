"""The SCF recovery ladder: what to change, rung by rung, when a CP2K SCF does not converge.

The rungs follow what custodian's CP2K handlers (used by atomate2) do, in the same order:

- orbital transformation (OT): the DIIS minimiser extrapolates from its history and can run
  away far from the minimum, so (1) switch to conjugate gradients (CG), which always go
  downhill; (2) give CG a three-point line search (3PNT, more robust than the default 2PNT on
  rough energy surfaces) and more steps (MAX_SCF 50 per outer cycle, 8 outer cycles);
  (3) change the preconditioner: FULL_SINGLE_INVERSE (custodian's choice), or FULL_ALL when the
  input already uses FULL_SINGLE_INVERSE (the exact one, costlier per step); (4) a smaller
  trial step (STEPSIZE 0.05 against CP2K's 0.15).
- diagonalisation: charge sloshing between iterations is damped by mixing less of the new
  density, so (1) Broyden mixing with ALPHA 0.1; (2) ALPHA 0.05 with more steps (twice MAX_SCF,
  at least 100), because a smaller mix needs more iterations; (3) more Fermi-Dirac smearing
  (at least 1000 K), which smooths occupations that flip between iterations near the Fermi level.

Rungs accumulate, like custodian editing one input in place: rung 3 keeps rungs 1 and 2. A rung
never makes a setting weaker than the base one (a step count is never lowered, ALPHA never
raised, the temperature never lowered), and a rung that would change nothing is left out.

Only rung 3 of diagonalisation changes the physics (the Fermi-Dirac free energy depends on the
electronic temperature; negligible for a wide-gap insulator like SiO2, kT = 0.09 eV at 1000 K),
so every label records the rung it came from. All the others change only how the same SCF
minimum is found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from alcgap.reference.base import Label, LabelStatus

#: the CP2K keyword (path inside &DFT) each field of ScfControls writes; used in provenance
KEYWORDS = {
    "max_scf": "SCF/MAX_SCF",
    "outer_max_scf": "SCF/OUTER_SCF/MAX_SCF",
    "ot_minimizer": "SCF/OT/MINIMIZER",
    "ot_linesearch": "SCF/OT/LINESEARCH",
    "ot_preconditioner": "SCF/OT/PRECONDITIONER",
    "ot_stepsize": "SCF/OT/STEPSIZE",
    "mixing_method": "SCF/MIXING/METHOD",
    "mixing_alpha": "SCF/MIXING/ALPHA",
    "electronic_temperature": "SCF/SMEAR/ELECTRONIC_TEMPERATURE [K]",
}


@dataclass(frozen=True)
class ScfControls:
    """The SCF keywords the ladder may change. ``None`` leaves CP2K's default in place
    (LINESEARCH 2PNT, STEPSIZE 0.15) and writes nothing, so the base input reads as before."""

    max_scf: int
    outer_max_scf: int
    ot_minimizer: str = "DIIS"
    ot_preconditioner: str = "FULL_SINGLE_INVERSE"
    ot_linesearch: str | None = None
    ot_stepsize: float | None = None
    mixing_method: str = "BROYDEN_MIXING"
    mixing_alpha: float = 0.4
    #: Fermi-Dirac electronic temperature, K
    electronic_temperature: float = 300.0

    @classmethod
    def from_settings(cls, settings: Any) -> ScfControls:
        """The controls a :class:`~alcgap.reference.Cp2kSettings` asks for."""
        return cls(
            max_scf=settings.max_scf, outer_max_scf=settings.outer_max_scf,
            ot_minimizer=getattr(settings, "ot_minimizer", "DIIS"), mixing_alpha=settings.mixing_alpha, electronic_temperature=settings.electronic_temperature,
        )

    def changes_from(self, other: ScfControls) -> dict[str, Any]:
        """CP2K keyword -> new value, for every keyword that differs from ``other``."""
        mine, theirs = asdict(self), asdict(other)
        return {KEYWORDS[name]: value for name, value in mine.items() if value != theirs[name]}


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: its name, why it may help, and the SCF controls it runs with
    (cumulative: all earlier rungs' changes included)."""

    name: str
    why: str
    controls: ScfControls
    #: CP2K keyword -> value changed by this rung alone (relative to the rung before)
    changes: dict[str, Any]


def _ot_steps(base: ScfControls) -> list[tuple[str, str, Callable[[ScfControls], ScfControls]]]:
    other_preconditioner = "FULL_ALL" if base.ot_preconditioner == "FULL_SINGLE_INVERSE" else "FULL_SINGLE_INVERSE"
    return [
        ("ot_cg", "CG always goes downhill where DIIS extrapolation can run away",
         lambda c: replace(c, ot_minimizer="CG")),
        ("ot_3pnt_more_steps", "a three-point line search and more steps (50 per outer cycle, 8 cycles)",
         lambda c: replace(c, ot_linesearch="3PNT", max_scf=max(c.max_scf, 50), outer_max_scf=max(c.outer_max_scf, 8))),
        (f"ot_preconditioner_{other_preconditioner.lower()}", f"another preconditioner: {other_preconditioner}",
         lambda c: replace(c, ot_preconditioner=other_preconditioner)),
        ("ot_stepsize_0.05", "a smaller OT trial step (0.05 instead of 0.15)",
         lambda c: replace(c, ot_stepsize=0.05 if c.ot_stepsize is None else min(c.ot_stepsize, 0.05))),
    ]


def _diagonalization_steps(base: ScfControls) -> list[tuple[str, str, Callable[[ScfControls], ScfControls]]]:
    return [
        ("broyden_alpha_0.1", "Broyden mixing of less new density (ALPHA 0.1) damps charge sloshing",
         lambda c: replace(c, mixing_method="BROYDEN_MIXING", mixing_alpha=min(c.mixing_alpha, 0.1))),
        ("alpha_0.05_more_steps", "ALPHA 0.05 and more steps (a smaller mix converges more slowly)",
         lambda c: replace(c, mixing_alpha=min(c.mixing_alpha, 0.05), max_scf=max(2 * c.max_scf, 100))),
        ("more_smearing", "more Fermi-Dirac smearing (at least 1000 K) smooths flipping occupations",
         lambda c: replace(c, electronic_temperature=max(2.0 * c.electronic_temperature, 1000.0))),
    ]


def scf_ladder(solver: Literal["ot", "diagonalization"], base: ScfControls) -> list[Rung]:
    """The rungs to try, in order, after an SCF with ``base`` controls failed under ``solver``.

    Pure: builds controls only, runs nothing. Rungs that would change nothing are left out.
    """
    steps = _ot_steps(base) if solver == "ot" else _diagonalization_steps(base)
    rungs, current = [], base
    for name, why, step in steps:
        following = step(current)
        if following != current:
            rungs.append(Rung(name, why, following, following.changes_from(current)))
            current = following
    return rungs


# ---------------------------------------------------------------------------------------------
# Running the ladder

#: an attempt: run CP2K with these SCF controls in this (new) directory, return its label
Attempt = Callable[[Path, ScfControls], Label]


def attempt_record(name: str, directory: Path, label: Label, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the label's provenance keeps of one retry (JSON-serialisable)."""
    record: dict[str, Any] = {"name": name, "directory": str(directory), "status": label.status.value}
    if changes is not None:
        record["changes"] = dict(changes)
    if label.reason:
        record["reason"] = label.reason
    if label.info.get("run_seconds") is not None:
        record["run_seconds"] = label.info["run_seconds"]
    return record


def climb(attempt: Attempt, rungs: list[Rung], directory: Path, first: Label,
          records: list[dict[str, Any]] | None = None) -> tuple[Label, list[dict[str, Any]]]:
    """Try ``rungs`` in turn after the failed ``first`` label, each in ``directory/rung-<i>-<name>``.

    Returns the label to keep and ``records`` (a new list if None) with one record per rung
    tried appended, after any records ``attempt`` itself appended (kept in the order run). Stops at the first rung whose SCF
    converges (its label is returned) or that fails otherwise (a time-out, a crash: changing SCF
    settings further would not help). A rung whose input CP2K refuses is a fault of this ladder,
    not of the user's input, so it comes back as ``program_error`` (never the fatal
    ``input_error``). When every rung fails to converge, the label is ``scf_not_converged`` and
    its reason names the rungs tried.
    """
    records = [] if records is None else records
    tried = 0
    for index, rung in enumerate(rungs, start=1):
        where = directory / f"rung-{index}-{rung.name}"
        label = attempt(where, rung.controls)
        records.append({"rung": index, **attempt_record(rung.name, where, label, rung.changes)})
        tried += 1
        if label.status is LabelStatus.INPUT_ERROR:
            return Label(LabelStatus.PROGRAM_ERROR, reason=f"recovery rung {rung.name}: CP2K refused its input: {label.reason}", info=label.info), records
        if label.status is not LabelStatus.SCF_NOT_CONVERGED:
            if label.ok:
                label.info["recovered_by"] = rung.name
            return label, records
    if not tried:
        return first, records
    names = ", ".join(rung.name for rung in rungs[:tried])
    reason = f"{first.reason}; the SCF recovery ladder did not converge it either ({tried} rungs tried: {names})"
    return Label(LabelStatus.SCF_NOT_CONVERGED, reason=reason, info=first.info), records
