"""Reading CP2K's output: energy, forces and stress, and why a run cannot give a label.

Pure functions, tested on stored snippets of real outputs (tests/data/cp2k). CP2K 2023.1 exits 0
after an unconverged SCF and still prints an energy and forces, so a run is classified from its
output, never from its exit code alone.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field

import numpy as np
from ase.units import Bohr, GPa, Hartree

from alcgap.reference.base import LabelStatus

_FLOAT = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[EeDd][-+]?\d+)?"
_ENERGY = re.compile(rf"ENERGY\|\s+Total FORCE_EVAL \( \w+ \) energy \[(?:a\.u\.|hartree)\]:?\s+({_FLOAT})")
_OLD_FORCE_ROW = re.compile(rf"^\s+\d+\s+\d+\s+[A-Za-z]+\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})\s*$")
_NEW_FORCE_ROW = re.compile(rf"^\s*FORCES\|\s+\d+\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})(?:\s+{_FLOAT})?\s*$")
_STRESS_ROW = re.compile(rf"^\s*STRESS\|\s+([xyz])\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})\s*$")
_OLD_STRESS_ROW = re.compile(rf"^\s+([XYZ])\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})\s*$")
_TIMING_CP2K = re.compile(rf"^\s*CP2K\s+1\s+{_FLOAT}\s+{_FLOAT}\s+{_FLOAT}\s+{_FLOAT}\s+({_FLOAT})\s*$", re.M)
_SCF_NOT_CONVERGED = "SCF run NOT converged"
_XTB_CHARGES = "Atomic charges outside chemical"


@dataclass
class Cp2kOutput:
    """What one CP2K energy/force run printed, in ASE units (eV, eV/A, eV/A^3)."""

    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    #: CP2K's own wall time for the whole run (its timing report), seconds
    cp2k_seconds: float | None = None
    warnings: list[str] = field(default_factory=list)


def _number(text: str) -> float:
    return float(text.replace("D", "E").replace("d", "e"))


def parse_cp2k_output(text: str) -> Cp2kOutput:
    """Energy, forces and stress of the last force evaluation in a CP2K output.

    Reads both layouts: CP2K <= 2024 (``ATOMIC FORCES in [a.u.]``, ``energy [a.u.]:``) and the
    later ``FORCES|`` / ``energy [hartree]`` one; the stress is read from ``STRESS|`` lines (GPa,
    2023.1 on) or the older ``STRESS TENSOR [GPa]`` block. CP2K's stress is the pressure-like
    tensor (positive under compression); ASE's is its negative.
    """
    out = Cp2kOutput()
    energies = _ENERGY.findall(text)
    if energies:
        out.energy = _number(energies[-1]) * Hartree
    lines = text.splitlines()
    forces = _last_block(lines, ("ATOMIC FORCES in [a.u.]", "FORCES| Atomic forces [hartree/bohr]"), (_OLD_FORCE_ROW, _NEW_FORCE_ROW))
    if forces:
        out.forces = np.array([[_number(x) for x in row] for row in forces]) * (Hartree / Bohr)
    stress = _last_block(lines, ("STRESS| Analytical stress tensor [GPa]", "STRESS| Numerical stress tensor [GPa]", "STRESS TENSOR [GPa]"), (_STRESS_ROW, _OLD_STRESS_ROW), width=4)
    if stress and len(stress) >= 3:
        tensor = np.array([[_number(x) for x in row[1:]] for row in stress[:3]])
        voigt = tensor[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        out.stress = -voigt * GPa
    timings = _TIMING_CP2K.findall(text)
    if timings:
        out.cp2k_seconds = _number(timings[-1])
    out.warnings = re.findall(r"\*\*\* WARNING in (.+?) \*\*\*", text)
    return out


def _last_block(lines: list[str], headers: tuple[str, ...], rows: tuple[re.Pattern, ...], width: int = 3) -> list[tuple[str, ...]]:
    """Rows of the last block that starts with one of ``headers`` (blank and header lines skipped)."""
    start = max((i for i, line in enumerate(lines) if any(h in line for h in headers)), default=None)
    if start is None:
        return []
    found: list[tuple[str, ...]] = []
    for line in lines[start + 1:]:
        match = next((m for m in (row.match(line) for row in rows) if m), None)
        if match:
            found.append(match.groups()[-width:] if width == 3 else match.groups())
        elif found and line.strip():
            break  # first non-row line after the rows ends the block
    return found


def abort_message(text: str) -> str | None:
    """The message inside CP2K's last ``[ABORT]`` box, joined into one line, with its source location."""
    lines = text.splitlines()
    marks = [i for i, line in enumerate(lines) if "[ABORT]" in line]
    if not marks:
        return None
    words = []
    for line in lines[marks[-1] + 1:]:
        stripped = line.strip()
        if stripped.startswith("*" * 10) or not stripped.startswith("*"):
            break
        # drop the frame and the ASCII-art figure in the first columns of the box
        inner = stripped.strip("*").rstrip()
        inner = re.sub(r"^\s*(\\___/|\|(?=\s|$)|O/\||/\| \||/ \\)", "", inner)
        if inner.strip():
            words.append(inner.strip())
    return " ".join(words) or "CP2K aborted"


#: CP2K's messages for an input it refuses, seen with 2023.1: the input parser (sources in
#: input/: unknown keyword or section, invalid value, a number expected), a basis set or
#: potential missing from its file, a file that cannot be opened, an option refused for the
#: method ("Full_kinetic not available for semi-empirical methods")
_INPUT_ERROR_MESSAGES = re.compile(
    r"The requested .* was not found|cannot be opened|not available for|unknown keyword|unknown subsection"
    r"|invalid value for|was expected, found",
    re.IGNORECASE,
)
_ABORT_SOURCE = re.compile(r"(\S+\.F):\d+$")


def is_input_error(abort: str) -> bool:
    """Whether a CP2K ``[ABORT]`` message (from :func:`abort_message`) says its input is wrong.

    Other aborts (a failed Cholesky decomposition, memory, MPI) are about the run, not the input.
    """
    source = _ABORT_SOURCE.search(abort)
    return bool((source and source.group(1).startswith("input/")) or _INPUT_ERROR_MESSAGES.search(abort))


def classify_failure(text: str, returncode: int | None, timed_out: bool = False, walltime: float | None = None,
                     hung: float | None = None) -> tuple[LabelStatus, str] | None:
    """Why a CP2K run cannot give a label, or None if it finished cleanly.

    ``hung``: the run was killed after its output had not grown for that many seconds.
    Order matters: a run that hit the walltime may also lack its final lines; CP2K 2023.1 reports
    an unconverged SCF only as a warning (exit 0, energy and forces printed anyway); from 2024.1 on
    it aborts with a message that also names the SCF. An ``[ABORT]`` about the input is
    ``input_error`` (fatal, see :attr:`Label.fatal`), any other abort ``program_error``.
    """
    if hung is not None:
        return LabelStatus.HUNG, f"killed as hung: its output did not grow for {hung:g} s"
    if timed_out:
        return LabelStatus.TIMED_OUT, f"killed after the walltime of {walltime:g} s" if walltime else "killed after the walltime"
    abort = abort_message(text)
    if abort is not None:
        if _SCF_NOT_CONVERGED in abort:
            return LabelStatus.SCF_NOT_CONVERGED, abort
        if _XTB_CHARGES in text and abort.startswith("xTB Charges"):
            # seen with xTB and Broyden mixing (ALPHA 0.4): the SCF sloshes charge and aborts in
            # its second step; less mixing cures it, so it is an SCF failure for the ladder
            return LabelStatus.SCF_NOT_CONVERGED, f"SCF diverged: atomic charges outside the chemical range ({abort})"
        return (LabelStatus.INPUT_ERROR if is_input_error(abort) else LabelStatus.PROGRAM_ERROR), abort
    warning = re.search(r"\*\*\* WARNING in (\S+) :: (SCF run NOT converged)\s*\*\*\*", text)
    if warning or _SCF_NOT_CONVERGED in text:
        return LabelStatus.SCF_NOT_CONVERGED, (f"{warning.group(2)} ({warning.group(1)})" if warning else _SCF_NOT_CONVERGED)
    if returncode not in (0, None):
        how = f"killed by signal {signal.Signals(-returncode).name}" if returncode < 0 else f"exit code {returncode}"
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
        return LabelStatus.CRASHED, f"cp2k {how}; last output: {tail}" if tail else f"cp2k {how}, no output"
    if "PROGRAM ENDED AT" not in text:
        return LabelStatus.CRASHED, "output ends before 'PROGRAM ENDED AT' (run cut off)"
    return None
