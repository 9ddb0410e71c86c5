"""CP2K as the reference: one ``cp2k.psmp -i cp2k.inp -o cp2k.out`` process per structure.

Each calculation runs in a fresh directory that keeps its readable input and its output, so a
user can rerun one label by hand. Failures come back as failed :class:`Label`s, classified from
the output itself: CP2K 2023.1 exits 0 after an unconverged SCF and still prints an energy and
forces, so the exit code alone would store wrong labels.

Resilience: an SCF that does not converge is retried along the recovery ladder of
:mod:`alcgap.reference._cp2k_recovery` (one sub-folder per rung, each rung in
``label.info["recovery"]``); an input CP2K refuses is ``input_error``, never retried and fatal
(:attr:`Label.fatal`: every other structure would fail alike); a run whose output stops growing
for ``hang_timeout`` seconds is killed as ``hung``; a walltime kill is retried once if
``retry_timeout``. Atoms too close for DFT are screened by the caller
(:mod:`alcgap.reference.contacts`), never here: dimer scans go there on purpose.

The parts: the settings (:mod:`._cp2k_settings`), the input (:mod:`._cp2k_input`), reading the
output (:mod:`._cp2k_output`), the recovery ladder (:mod:`._cp2k_recovery`); running the process
under its watchdog is :func:`alcgap.procs.run_watched`.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from ase import Atoms

from alcgap.procs import run_watched
from alcgap.reference._cp2k_input import cp2k_input, in_isolated_box, multiplicity_of, scf_solver_for
from alcgap.reference._cp2k_output import classify_failure, parse_cp2k_output
from alcgap.reference._cp2k_recovery import ScfControls, attempt_record, climb, scf_ladder
from alcgap.reference._cp2k_settings import Cp2kSettings
from alcgap.reference.base import Label, LabelStatus, Reference

#: files whose growth shows that CP2K is alive
WATCHED_OUTPUTS = ("cp2k.out", "cp2k.log")

#: the output of an MPI launch that failed before CP2K itself started: retried once
MPI_START_FAILURE = "before MPI_INIT completed"


class Cp2kReference(Reference):
    """Label structures with CP2K, one ``cp2k.psmp`` process per structure.

    ``species`` are the elements this reference will see; their basis sets and pseudopotentials
    are looked up in the library files here, so a missing one is reported now and not after a
    campaign has started. ``workdir`` holds one fresh sub-directory per calculation (input,
    output, log), kept for inspection; default: a new temporary directory.

    The spin multiplicity of each structure is ``atoms.info["multiplicity"]`` when given,
    otherwise :func:`default_multiplicity` (Hund's rule for single atoms, the sum of the atomic
    spins for dimers, lowest spin for everything else); open shells run spin-unrestricted (UKS).
    """

    name = "cp2k"

    def __init__(self, settings: Cp2kSettings, species: list[str] | tuple[str, ...], workdir: str | Path | None = None):
        self.config = settings
        self.species = list(species)
        self._checked = settings.check_on == "driver"
        # elements are checked anywhere; their library entries only where CP2K's files are
        settings.check_species(self.species, libraries=self._checked)
        self._workdir = Path(workdir) if workdir is not None else None

    def check_here(self) -> str:
        """The machine checks of ``check_on: compute``, where this runs (once per process): the
        executable, the launcher, the data files and the species' library entries. Returns the
        data directory found; raises ValueError naming the field."""
        if not self._checked:
            checked = self.config.on_this_machine()
            checked.check_species(self.species)
            self.config, self._checked = checked, True
        return str(self.config.data_dir)

    @property
    def workdir(self) -> Path:
        """Where calculations keep their folders; made at the first calculation, not before
        (a reference built to check a config writes nothing)."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="alcgap-cp2k-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir

    @workdir.setter
    def workdir(self, value: str | Path) -> None:
        self._workdir = Path(value)

    def settings(self) -> dict[str, Any]:
        return {**self.config.label_settings(), "species": self.species}

    def command(self) -> list[str]:
        return [*self.config.launch_prefix, self.config.executable, "-i", "cp2k.inp", "-o", "cp2k.out"]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ, OMP_NUM_THREADS=str(self.config.omp_threads))
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Debian's cp2k.psmp is OpenMPI-built; OpenMPI refuses to start as root without these
            # (CI runs as root). Other launchers ignore them.
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        if not self.config.launch_prefix:
            # an OpenMPI singleton otherwise starts an orted daemon first (seen: 0.1-0.2 s of the
            # 0.6-0.8 s CP2K needs to start); CP2K never spawns processes. Ignored by other MPIs.
            env.setdefault("OMPI_MCA_ess_singleton_isolated", "1")
        return env

    def prepare(self, atoms: Atoms) -> tuple[Atoms, int]:
        """The structure CP2K will see (boxed if non-periodic) and its multiplicity; ValueError if impossible."""
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(self.species))
        if unknown:
            raise ValueError(f"species {unknown} not in this reference's species {self.species}")
        if any(atoms.pbc) and not all(atoms.pbc):
            raise ValueError(f"pbc={list(atoms.pbc)}: only fully periodic or non-periodic structures are supported")
        multiplicity = multiplicity_of(atoms, self.config.charge)
        if all(atoms.pbc) or self.config.isolated_vacuum is None:
            if atoms.cell.rank < 3:
                raise ValueError("the structure has no 3D cell; give one or set isolated_vacuum")
            return atoms, multiplicity
        return in_isolated_box(atoms, self.config.isolated_vacuum), multiplicity

    def compute(self, atoms: Atoms) -> Label:
        """Label one structure in a fresh folder of ``workdir``.

        A failed SCF is retried along :func:`~alcgap.reference._cp2k_recovery.scf_ladder`
        (``scf_recovery``), each rung in a sub-folder ``rung-<i>-<name>``; a run killed at its
        walltime is run once more in ``retry-timeout`` when ``retry_timeout`` is set. An input
        error, a hung or crashed run are not retried. ``label.info`` keeps ``directory`` (the
        structure's folder), ``multiplicity``, the timings of the run the label comes from, and
        after any retry ``recovery`` (one record per retry: name, directory, changed CP2K
        keywords, status, reason, run_seconds), ``label_directory`` (the folder of the run that
        gave the label) and, when a rung converged, ``recovered_by`` (its name).

        Atoms too close for DFT are not refused here (dimer scans go to short distances on
        purpose): callers that must screen structures use :func:`alcgap.reference.contacts.too_close_pairs`.
        """
        start = time.perf_counter()
        try:
            self.check_here()
        except ValueError as err:  # check_on: compute, and this machine cannot run these settings
            return Label(LabelStatus.INPUT_ERROR, reason=f"reference (checked on {socket.gethostname()}): {err}")
        try:
            work, multiplicity = self.prepare(atoms)
        except ValueError as err:
            return Label(LabelStatus.PROGRAM_ERROR, reason=str(err))
        directory = Path(tempfile.mkdtemp(prefix=f"{atoms.get_chemical_formula()}-", dir=self.workdir))
        base = ScfControls.from_settings(self.config)
        recovery: list[dict[str, Any]] = []
        retries_left = [1 if self.config.retry_timeout else 0]

        def attempt(where: Path, scf: ScfControls) -> Label:
            label = self._run_once(atoms, work, multiplicity, where, scf)
            if label.status is LabelStatus.CRASHED and MPI_START_FAILURE in label.reason:
                # the MPI launcher failed before CP2K started (seen: OpenMPI "Local abort before
                # MPI_INIT completed" on a busy node): nothing about the structure, run it again once
                label = self._run_once(atoms, work, multiplicity, where / "retry-start", scf)
                recovery.append(attempt_record("start_retry", where / "retry-start", label))
            if label.status is LabelStatus.TIMED_OUT and retries_left[0] > 0:
                retries_left[0] -= 1
                label = self._run_once(atoms, work, multiplicity, where / "retry-timeout", scf)
                recovery.append(attempt_record("timeout_retry", where / "retry-timeout", label))
            return label

        label = attempt(directory, base)
        if label.status is LabelStatus.SCF_NOT_CONVERGED and self.config.scf_recovery:
            rungs = scf_ladder(scf_solver_for(work, self.config), base)[: self.config.max_recovery_rungs]
            label, _ = climb(attempt, rungs, directory, label, recovery)
        info = {**label.info, "directory": str(directory), "multiplicity": multiplicity}
        if recovery:
            info.update(recovery=recovery, label_directory=label.info["directory"])
        info["wall_seconds"] = time.perf_counter() - start
        label.info = info
        return label

    def _run_once(self, atoms: Atoms, work: Atoms, multiplicity: int, directory: Path, scf: ScfControls) -> Label:
        """One CP2K run in ``directory`` (created): its label, classified from its output."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cp2k.inp").write_text(cp2k_input(work, self.config, multiplicity, scf))
        info: dict[str, Any] = {"directory": str(directory)}
        launched = time.perf_counter()
        try:
            # its own session: with a launcher (mpiexec, srun) the ranks are its children, and a
            # walltime or hang kill must reach them all
            run = run_watched(self.command(), directory, "cp2k.log", env=self.environment(), walltime=self.config.walltime,
                              hang_timeout=self.config.hang_timeout, watched=WATCHED_OUTPUTS)
        except OSError as err:
            return Label(LabelStatus.CRASHED, reason=f"could not start {self.command()[0]}: {err}", info=info)
        info["run_seconds"] = time.perf_counter() - launched
        output = _read(directory / "cp2k.out")
        failure = classify_failure(output + "\n" + _read(directory / "cp2k.log"), run.returncode, run.timed_out,
                                   self.config.walltime, self.config.hang_timeout if run.hung else None)
        parsed = parse_cp2k_output(output)
        info.update(cp2k_seconds=parsed.cp2k_seconds, warnings=parsed.warnings)
        if failure is not None:
            return Label(failure[0], reason=failure[1], info=info)
        periodic = bool(all(atoms.pbc))
        if parsed.energy is None or parsed.forces is None or parsed.forces.shape != (len(atoms), 3) or (periodic and parsed.stress is None):
            return Label(LabelStatus.PROGRAM_ERROR, reason="CP2K ended normally but its output lacks the energy, forces or stress", info=info)
        return Label(LabelStatus.OK, energy=parsed.energy, forces=parsed.forces, stress=parsed.stress if periodic else None, info=info)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
