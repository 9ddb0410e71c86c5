"""The gap_fit adapter: builds the command line, runs it in its own folder, keeps its files.

The command is written next to its output (``gap_fit.cmd``) so a user can rerun one fit by hand.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Mapping, Sequence

from alcgap.procs import run_watched


class GapFitError(RuntimeError):
    """gap_fit failed; the message carries its own error lines."""


class GapFitNotFound(GapFitError):
    pass


def find_gap_fit() -> Path:
    """The gap_fit executable: next to this Python (quippy-ase wheel) or on PATH."""
    beside = Path(sys.executable).parent / "gap_fit"
    if beside.exists():
        return beside
    found = shutil.which("gap_fit")
    if found:
        return Path(found)
    raise GapFitNotFound(
        "gap_fit executable not found next to this Python or on PATH; install it with "
        "'pip install quippy-ase' into this environment (the wheel ships gap_fit)"
    )


def format_params(params: Mapping[str, object]) -> str:
    """``key=value`` pairs in gap_fit/QUIP syntax; bools as T/F, sequences space-separated in {}."""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "T" if value else "F"
        elif isinstance(value, (list, tuple)):
            text = "{" + " ".join(str(v) for v in value) + "}"
        else:
            text = str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def descriptor(name: str, **params: object) -> str:
    """One descriptor entry of the ``gap={...}`` argument, e.g. ``soap n_max=6 ...``."""
    return f"{name} {format_params(params)}"


def run_gap_fit(
    workdir: str | os.PathLike,
    *,
    at_file: str | os.PathLike,
    gp_file: str,
    descriptors: Sequence[str],
    options: Mapping[str, object],
    threads: int | None = None,
    timeout: float | None = None,
) -> Path:
    """Run gap_fit in ``workdir``; return the path of the written xml.

    ``options`` are gap_fit's own keywords (default_sigma, e0, core_param_file, ...).
    Raises GapFitError with gap_fit's message when it fails or writes no xml.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    executable = find_gap_fit()
    args = [
        str(executable),
        f"at_file={at_file}",
        f"gp_file={gp_file}",
        "gap={" + " : ".join(descriptors) + "}",
    ] + [format_params({key: value}) for key, value in options.items() if value is not None]
    (workdir / "gap_fit.cmd").write_text(shlex.join(args) + "\n")
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    xml = workdir / gp_file
    for stale in workdir.glob(gp_file + "*"):
        stale.unlink()
    log_path = workdir / "gap_fit.log"
    # in the caller's session, as a plain child: whatever stops the caller's process group (a
    # batch job's end, a Parsl worker pool) stops gap_fit with it
    run = run_watched(args, workdir, log_path.name, env=env, walltime=timeout, new_session=False)
    if run.timed_out:
        raise GapFitError(f"gap_fit exceeded {timeout} s (log: {log_path})")
    if run.returncode != 0 or not xml.exists():
        raise GapFitError(
            f"gap_fit failed (exit {run.returncode}) in {workdir}: {_error_lines(log_path)}"
        )
    return xml


def _error_lines(log_path: Path) -> str:
    text = log_path.read_text(errors="replace")
    hits = [line.strip() for line in text.splitlines() if re.search(r"ABORT|ERROR|error", line)]
    return " | ".join(hits[-5:]) if hits else "; ".join(text.strip().splitlines()[-5:])


def gap_label(xml: str | os.PathLike) -> str:
    """Label of the GAP this xml's gap_fit run produced (``IP GAP label=...`` selects it).

    In a composite xml the top-level potential is a Sum over the core (aux) and the new GAP;
    its label is the new (main) GAP's.
    """
    pot = ET.parse(xml).getroot().find("Potential")
    if pot is None or "label" not in pot.attrib:
        raise GapFitError(f"no top-level Potential in {xml}: not a gap_fit xml")
    return pot.attrib["label"]
