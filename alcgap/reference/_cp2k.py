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
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.units import Bohr, GPa, Hartree
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alcgap.reference._cp2k_recovery import (
    ScfControls,
    attempt_record,
    climb,
    scf_ladder,
)
from alcgap.reference.base import Label, LabelStatus, Reference

#: where distributions put CP2K's data files (basis sets, potentials, dftd3.dat, xTB_parameters)
DATA_DIR_CANDIDATES = ("/usr/share/cp2k", "/usr/share/cp2k/data", "/usr/local/share/cp2k/data", "/opt/cp2k/data")


def find_data_dir(executable: str | None = None) -> Path | None:
    """CP2K's data directory: ``$CP2K_DATA_DIR``, next to the executable, or a distribution path."""
    candidates = [os.environ.get("CP2K_DATA_DIR", "")]
    found = shutil.which(executable) if executable else None
    if found:
        prefix = Path(found).resolve().parent.parent
        candidates += [str(prefix / "share" / "cp2k" / "data"), str(prefix / "share" / "cp2k"), str(prefix / "data")]
    candidates += list(DATA_DIR_CANDIDATES)
    for candidate in candidates:
        if candidate and (Path(candidate) / "BASIS_MOLOPT").is_file():
            return Path(candidate)
    return None


class Cp2kSettings(BaseModel):
    """Everything needed to label with CP2K; validated before any CP2K run.

    Energies are Kohn-Sham DFT (``method="dft"``, GPW with GTH pseudopotentials) or GFN1-xTB
    (``method="xtb"``, for cheap demonstrations). Cutoffs are in Rydberg, as in CP2K.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["cp2k"] = "cp2k"
    method: Literal["dft", "xtb"] = "dft"
    #: CP2K's XC_FUNCTIONAL shortcut (semi-local functionals only)
    xc: Literal["PBE", "BLYP", "BP", "PADE", "TPSS", "OLYP", "HCTH120"] = "PBE"
    basis_set: str = "DZVP-MOLOPT-SR-GTH"
    pseudopotential: str = "GTH-PBE"
    #: plane-wave cutoff of the finest grid and the relative cutoff (Ry)
    cutoff: float = Field(400.0, gt=0.0)
    rel_cutoff: float = Field(60.0, gt=0.0)
    #: EPS_DEFAULT: screening/integral accuracy; too loose a value breaks forces
    eps_default: float = Field(1e-12, gt=0.0, lt=1e-6)
    #: SCF solver for periodic cells: "diagonalization" (Broyden mixing, Fermi-Dirac smearing;
    #: seen: 13 steps on 24-atom SiO2 with PBE where OT needed 47-50) or "ot" (orbital
    #: transformation, cheaper per step for cells of many hundreds of atoms). Default: the one
    #: seen to work, diagonalisation for DFT, OT for xTB (Broyden: 50 steps were not enough)
    scf_solver: Literal["ot", "diagonalization"] | None = None
    #: SCF solver for non-periodic structures (isolated atoms, dimers): OT keeps integer
    #: occupations, the symmetry-broken ground state of open-shell atoms; smearing spreads the
    #: O atom's p electrons fractionally (seen: 0.5 eV higher, and Broyden did not converge)
    isolated_scf_solver: Literal["ot", "diagonalization"] = "ot"
    eps_scf: float = Field(1e-6, gt=0.0, lt=1e-2)
    #: EPS_SCF for non-periodic structures with OT. OT converges the orbital gradient; in an
    #: open-shell atom rotations among its degenerate p orbitals cost no energy, and PBE's
    #: numerical noise in the vacuum keeps that gradient at 1e-6..1e-5 (seen: 1e-6 never
    #: reached for O). The energy error is quadratic in it: below 1e-9 Ha at 1e-5.
    isolated_eps_scf: float = Field(1e-5, gt=0.0, lt=1e-2)
    #: OT minimiser of the first attempt: "DIIS" (fewest steps where the gap is wide) or "CG"
    #: (always downhill; fewer steps where the gap is small, as in cells carved out of a melt).
    #: How the SCF gets there, not where: not part of a label's settings (nor is the ladder's CG)
    ot_minimizer: Literal["DIIS", "CG"] = "DIIS"
    #: SCF steps: per outer cycle with OT, in total with diagonalisation
    max_scf: int = Field(50, ge=1)
    #: outer SCF cycles (OT only)
    outer_max_scf: int = Field(10, ge=1)
    #: Fermi-Dirac electronic temperature (K), used with diagonalisation
    electronic_temperature: float = Field(300.0, ge=0.0)
    #: vacuum (A) on each side of a non-periodic structure: CP2K gets an orthorhombic box of the
    #: structure's extent plus twice this (grid cost grows with the box); None keeps the
    #: structure's own cell
    isolated_vacuum: float | None = Field(5.0, gt=0.0)
    #: Broyden density mixing (diagonalisation)
    mixing_alpha: float = Field(0.4, gt=0.0, le=1.0)
    #: unoccupied orbitals per spin for smearing (capped by CP2K at the basis size)
    added_mos: int = Field(20, ge=1)
    #: Grimme D3 dispersion (needs dftd3.dat in data_dir)
    dispersion: bool = False
    charge: int = 0
    executable: str = "cp2k.psmp"
    #: command put before the executable, e.g. ["/usr/bin/mpiexec.openmpi", "-n", "2"] or
    #: ["srun", "-n", "4"]; empty runs one rank directly (never a bare "mpiexec": which MPI
    #: that finds depends on PATH, and Debian's cp2k.psmp is built on OpenMPI)
    launch_prefix: list[str] = Field(default_factory=list)
    omp_threads: int = Field(1, ge=1)
    #: seconds allowed per calculation; the whole process group is killed after that
    walltime: float = Field(3600.0, gt=0.0)
    #: seconds without any growth of CP2K's output (cp2k.out, cp2k.log) after which the run is
    #: taken as hung (a dead MPI peer, a stalled file system) and killed; None: only the walltime.
    #: Must exceed CP2K's longest silent phase: the start-up of a large cell and one SCF step
    hang_timeout: float | None = Field(600.0, gt=0.0)
    #: retry an unconverged SCF with the recovery ladder (see alcgap.reference._cp2k_recovery);
    #: each rung runs in its own sub-folder and is recorded in label.info["recovery"]
    scf_recovery: bool = True
    #: at most this many rungs (None: all of them, 4 for OT, 3 for diagonalisation)
    max_recovery_rungs: int | None = Field(None, ge=0)
    #: run a calculation killed at its walltime once more (a busy node may have slowed it)
    retry_timeout: bool = False
    #: CP2K data directory; default: $CP2K_DATA_DIR, next to the executable, or /usr/share/cp2k
    data_dir: Path | None = None
    #: file names (inside data_dir) or paths of the basis-set and pseudopotential libraries
    basis_file: str = "BASIS_MOLOPT"
    potential_file: str = "GTH_POTENTIALS"
    #: CP2K input merged into the generated input, section by section (k-points, another SCF
    #: guess, a restart from a wavefunction, an XC functional outside ``xc``):
    #: alcgap.reference.cp2k_sections. It changes the labels: part of their settings
    input_sections: str | None = None

    @field_validator("input_sections")
    @classmethod
    def _sections_well_formed(cls, value: str | None) -> str | None:
        if value:
            from alcgap.reference.cp2k_sections import parse

            tree = parse(value, "input_sections")  # raises naming the line
            generated = {("FORCE_EVAL", "SUBSYS", "COORD"), ("FORCE_EVAL", "SUBSYS", "CELL")}

            def walk(section, path):
                for child in section.sections:
                    where = path + (child.name.upper(),)
                    if where in generated:
                        raise ValueError(f"input_sections: &{'/&'.join(where)} comes from each structure "
                                         "being labelled; leave it out")
                    walk(child, where)

            walk(tree, ())
        return value

    #: where the executable, the launcher and the data files are checked: "driver" (when the
    #: settings are made, before anything runs) or "compute" (for a login node without CP2K: by a
    #: first task on the MPI executor, where the labels run, before the campaign's first label;
    #: and again by each worker before its first calculation)
    check_on: Literal["driver", "compute"] = "driver"

    @model_validator(mode="after")
    def _data_files_exist(self) -> "Cp2kSettings":
        if self.scf_solver is None:
            self.scf_solver = "ot" if self.method == "xtb" else "diagonalization"
        if self.check_on == "driver":
            self._check_machine()
        return self

    def on_this_machine(self) -> "Cp2kSettings":
        """These settings checked here (executable, launcher, data files), with ``data_dir``
        resolved: what a compute-side check runs. Raises ValueError naming the field."""
        checked = self.model_copy(update={"check_on": "driver"})
        checked._check_machine()
        return checked

    def _check_machine(self) -> None:
        if shutil.which(self.executable) is None:
            raise ValueError(
                f"executable: {self.executable!r} is not on PATH; install Debian's `cp2k` package "
                "(apt-get install cp2k gives cp2k.psmp) or set executable to the full path of your cp2k.psmp"
                + ("" if self.check_on == "compute" else "; on a login node without CP2K, set check_on: compute")
            )
        if self.launch_prefix and shutil.which(self.launch_prefix[0]) is None:
            raise ValueError(f"launch_prefix: launcher {self.launch_prefix[0]!r} is not on PATH; give its full path or "
                             "leave launch_prefix empty")
        if self.data_dir is None:
            self.data_dir = find_data_dir(self.executable)
            if self.data_dir is None:
                raise ValueError(
                    "data_dir: CP2K's data directory (with BASIS_MOLOPT) was not found; "
                    "set data_dir or the CP2K_DATA_DIR environment variable"
                )
        if not self.data_dir.is_dir():
            raise ValueError(f"data_dir: {self.data_dir} is not a directory")
        needed = {"xTB parameter file": "xTB_parameters"} if self.method == "xtb" else {
            "basis_file": self.basis_file, "potential_file": self.potential_file}
        if self.dispersion:
            needed["dispersion parameter file"] = "dftd3.dat"
        for field_name, name in needed.items():
            if not self.data_path(name).is_file():
                raise ValueError(f"{field_name}: {name!r} not found (looked in data_dir {self.data_dir}); give an existing file or another data_dir")
        _check_launcher_mpi(self.launch_prefix, self.executable)

    def data_path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else Path(self.data_dir) / path

    def check_species(self, species: list[str] | tuple[str, ...], libraries: bool = True) -> None:
        """Refuse species this reference cannot label: not elements, or (DFT, with ``libraries``:
        where the library files are) without an entry of ``basis_set`` / ``pseudopotential`` in
        them. The messages name the field."""
        for symbol in species:
            if symbol not in atomic_numbers or symbol == "X":
                raise ValueError(f"species: {symbol!r} is not a chemical element symbol")
        if self.method != "dft" or not libraries:
            return
        for field_name, wanted, file_field in (("basis_set", self.basis_set, "basis_file"),
                                               ("pseudopotential", self.pseudopotential, "potential_file")):
            path = self.data_path(getattr(self, file_field))
            available = read_library_names(path)
            for symbol in species:
                if wanted.upper() not in available.get(symbol, set()):
                    names = sorted(available.get(symbol, set()))
                    choice = (f"names for {symbol} there: {', '.join(names[:12])}" if names
                              else f"the file has no entry for {symbol}")
                    raise ValueError(f"reference.{field_name}: {wanted!r} for {symbol} is not in {path} ({choice}); "
                                     f"change reference.{field_name} or reference.{file_field}")

    def label_settings(self) -> dict[str, Any]:
        """The settings that change a label: not where or how CP2K runs (launcher, threads, walltime)."""
        # nor how failures are recovered: a recovered label records its rung in label.info
        skip = {"kind", "executable", "launch_prefix", "omp_threads", "walltime", "data_dir", "check_on",
                "hang_timeout", "scf_recovery", "max_recovery_rungs", "retry_timeout", "ot_minimizer"}
        out = self.model_dump(mode="json", exclude=skip)
        # file names, not machine-specific paths: the same library on two machines is one label
        out["basis_file"] = Path(self.basis_file).name
        out["potential_file"] = Path(self.potential_file).name
        if not out.get("input_sections"):  # the labels of settings made before it existed stay the same labels
            out.pop("input_sections", None)
        if self.method == "xtb":
            for name in ("xc", "basis_set", "pseudopotential", "cutoff", "rel_cutoff", "basis_file", "potential_file", "dispersion"):
                out.pop(name)
        return out


def _check_launcher_mpi(launch_prefix: list[str], executable: str) -> None:
    """Refuse an mpiexec of another MPI than the one cp2k.psmp is linked with (it would start N serial copies)."""
    if not launch_prefix or not Path(launch_prefix[0]).name.startswith(("mpiexec", "mpirun", "orterun")):
        return
    try:
        version = subprocess.run([launch_prefix[0], "--version"], capture_output=True, text=True, timeout=20).stdout
        libraries = subprocess.run(["ldd", shutil.which(executable)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return  # cannot tell; the run itself will show it
    launcher_open = "Open MPI" in version or "OpenRTE" in version
    executable_open = "libmpi.so.40" in libraries
    if "libmpi" in libraries and launcher_open != executable_open:
        flavour = "OpenMPI" if executable_open else "MPICH-compatible MPI"
        raise ValueError(
            f"launch_prefix: {launch_prefix[0]!r} ({shutil.which(launch_prefix[0])}) belongs to another MPI than "
            f"{executable}, which is built on {flavour}; use that MPI's launcher "
            "(Debian's cp2k: /usr/bin/mpiexec.openmpi)"
        )


def read_library_names(path: Path) -> dict[str, set[str]]:
    """Names per element in a CP2K basis-set or GTH-potential file (upper case, as CP2K compares)."""
    names: dict[str, set[str]] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        words = line.split()
        if len(words) < 2 or line.lstrip().startswith("#"):
            continue
        symbol = words[0].capitalize()
        if symbol in atomic_numbers and symbol != "X" and not _is_number(words[1]):
            names.setdefault(symbol, set()).update(word.upper() for word in words[1:])
    return names


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Spin: the multiplicity of isolated atoms and dimers

#: ground states whose configuration differs from Aufbau in the number of unpaired electrons
_UNPAIRED_EXCEPTIONS = {"Cr": 6, "Nb": 5, "Mo": 6, "Pd": 0, "Gd": 8}
_SUBSHELLS = ["1s", "2s", "2p", "3s", "3p", "4s", "3d", "4p", "5s", "4d", "5p", "6s", "4f", "5d", "6p", "7s", "5f", "6d", "7p"]


def unpaired_electrons(symbol: str, charge: int = 0) -> int:
    """Unpaired electrons of an atom in its ground state (Aufbau filling, Hund's rule), e.g. O: 2, Si: 2."""
    if charge == 0 and symbol in _UNPAIRED_EXCEPTIONS:
        return _UNPAIRED_EXCEPTIONS[symbol]
    electrons = atomic_numbers[symbol] - charge
    unpaired = 0
    for subshell in _SUBSHELLS:
        if electrons <= 0:
            break
        orbitals = 2 * "spdf".index(subshell[1]) + 1
        n = min(electrons, 2 * orbitals)
        unpaired = n if n <= orbitals else 2 * orbitals - n
        electrons -= n
    return unpaired


def default_multiplicity(atoms: Atoms, charge: int = 0) -> int:
    """2S+1 for a structure: Hund's rule for one atom; for a non-periodic dimer the sum of the two
    atomic spins (high spin, the state that dissociates into ground-state atoms); otherwise the
    lowest multiplicity the electron count allows (1 or 2).
    """
    symbols = atoms.get_chemical_symbols()
    electrons = sum(atomic_numbers[s] for s in symbols) - charge
    if len(symbols) == 1:
        return 1 + unpaired_electrons(symbols[0], charge)
    if len(symbols) == 2 and not any(atoms.pbc) and charge == 0:
        return 1 + sum(unpaired_electrons(s) for s in symbols)
    return 1 + electrons % 2


def multiplicity_of(atoms: Atoms, charge: int = 0) -> int:
    """The multiplicity to use: ``atoms.info["multiplicity"]`` when set, otherwise the default rule."""
    override = atoms.info.get("multiplicity")
    if override is None:
        return default_multiplicity(atoms, charge)
    electrons = sum(atomic_numbers[s] for s in atoms.get_chemical_symbols()) - charge
    if int(override) < 1 or (int(override) - 1) % 2 != electrons % 2:
        raise ValueError(f"atoms.info['multiplicity']={override} is impossible with {electrons} electrons")
    return int(override)


# ---------------------------------------------------------------------------------------------
# The input file


def scf_solver_for(atoms: Atoms, settings: Cp2kSettings) -> str:
    """The SCF solver a structure runs with: periodic cells and isolated structures differ."""
    return settings.scf_solver if all(atoms.pbc) else settings.isolated_scf_solver


def cp2k_input(atoms: Atoms, settings: Cp2kSettings, multiplicity: int, scf: ScfControls | None = None) -> str:
    """A readable CP2K input for energy and forces (and the analytical stress of periodic cells).

    ``scf`` overrides the SCF keywords the recovery ladder changes; default: from ``settings``.
    """
    periodic = bool(all(atoms.pbc))
    solver = scf_solver_for(atoms, settings)
    scf = scf or ScfControls.from_settings(settings)
    open_shell = multiplicity > 1
    lines = [
        "&GLOBAL",
        "  PROJECT cp2k",
        "  RUN_TYPE ENERGY_FORCE",
        "  PRINT_LEVEL LOW",
        "&END GLOBAL",
        "&FORCE_EVAL",
        "  METHOD QUICKSTEP",
        f"  STRESS_TENSOR {'ANALYTICAL' if periodic else 'NONE'}",
        "  &DFT",
        *_indent(_dft_block(settings, scf, periodic, solver, multiplicity, open_shell), 4),
        "  &END DFT",
        "  &SUBSYS",
        *_indent(_subsys_block(atoms, settings, periodic), 4),
        "  &END SUBSYS",
        "  &PRINT",
        "    &FORCES ON",
        "    &END FORCES",
        *(["    &STRESS_TENSOR ON", "    &END STRESS_TENSOR"] if periodic else []),
        "  &END PRINT",
        "&END FORCE_EVAL",
    ]
    from alcgap.reference.cp2k_sections import merged_input

    return merged_input("\n".join(lines) + "\n", settings.input_sections)


def _indent(lines: list[str], n: int) -> list[str]:
    return [" " * n + line for line in lines]


def _dft_block(settings: Cp2kSettings, scf: ScfControls, periodic: bool, solver: str, multiplicity: int, open_shell: bool) -> list[str]:
    s = settings
    lines = []
    if s.method == "dft":
        lines += [f"BASIS_SET_FILE_NAME {s.data_path(s.basis_file)}", f"POTENTIAL_FILE_NAME {s.data_path(s.potential_file)}"]
    lines += [f"CHARGE {s.charge}"]
    if open_shell:
        lines += ["UKS", f"MULTIPLICITY {multiplicity}"]
    if s.method == "dft":
        lines += ["&MGRID", f"  CUTOFF {s.cutoff:g}", f"  REL_CUTOFF {s.rel_cutoff:g}", "&END MGRID"]
        lines += ["&QS", "  METHOD GPW", f"  EPS_DEFAULT {s.eps_default:.1e}", "&END QS"]
    else:
        lines += [
            "&QS", "  METHOD xTB", f"  EPS_DEFAULT {s.eps_default:.1e}",
            "  &xTB",
            f"    DO_EWALD {'T' if periodic else 'F'}",
            "    &PARAMETER",
            f"      PARAM_FILE_PATH {s.data_dir}/",  # CP2K joins path and name without a separator
            "      PARAM_FILE_NAME xTB_parameters",
            "    &END PARAMETER",
            "  &END xTB",
            "&END QS",
        ]
    if not periodic:
        # Martyna-Tuckerman isolated electrostatics (no images, no neutralising background);
        # seen: O atom energy changes by 0.3 meV between 10 and 14 A boxes
        lines += ["&POISSON", "  PERIODIC NONE", "  POISSON_SOLVER MT", "&END POISSON"]
    lines += ["&SCF", *_indent(_scf_block(s, scf, solver, multiplicity, open_shell, periodic), 2), "&END SCF"]
    if s.method == "dft":
        lines += ["&XC", f"  &XC_FUNCTIONAL {s.xc}", "  &END XC_FUNCTIONAL"]
        if s.dispersion:
            lines += [
                "  &VDW_POTENTIAL",
                "    POTENTIAL_TYPE PAIR_POTENTIAL",
                "    &PAIR_POTENTIAL",
                "      TYPE DFTD3",
                f"      PARAMETER_FILE_NAME {s.data_path('dftd3.dat')}",
                f"      REFERENCE_FUNCTIONAL {s.xc}",
                "    &END PAIR_POTENTIAL",
                "  &END VDW_POTENTIAL",
            ]
        lines += ["&END XC"]
    return lines


def _scf_block(s: Cp2kSettings, scf: ScfControls, solver: str, multiplicity: int, open_shell: bool, periodic: bool) -> list[str]:
    eps_scf = s.eps_scf if periodic else s.isolated_eps_scf
    lines = ["SCF_GUESS ATOMIC", f"EPS_SCF {eps_scf:.1e}", f"MAX_SCF {scf.max_scf}"]
    if solver == "ot":
        # FULL_KINETIC is refused for xTB ("not available for semi-empirical")
        lines += [
            "&OT", f"  MINIMIZER {scf.ot_minimizer}",
            *([f"  LINESEARCH {scf.ot_linesearch}"] if scf.ot_linesearch else []),
            *([f"  STEPSIZE {scf.ot_stepsize:g}"] if scf.ot_stepsize is not None else []),
            f"  PRECONDITIONER {scf.ot_preconditioner}", "&END OT",
            "&OUTER_SCF", f"  EPS_SCF {eps_scf:.1e}", f"  MAX_SCF {scf.outer_max_scf}", "&END OUTER_SCF",
        ]
    else:
        lines += [
            # CP2K caps this at the number of basis functions (-1, "all", trips a CPASSERT in UKS)
            f"ADDED_MOS {s.added_mos}",
            "&DIAGONALIZATION", "  ALGORITHM STANDARD", "&END DIAGONALIZATION",
            "&SMEAR ON", "  METHOD FERMI_DIRAC", f"  ELECTRONIC_TEMPERATURE [K] {scf.electronic_temperature:g}",
            # keep the spin state the multiplicity asks for instead of letting it float
            *([f"  FIXED_MAGNETIC_MOMENT {multiplicity - 1}"] if open_shell else []),
            "&END SMEAR",
            "&MIXING", f"  METHOD {scf.mixing_method}", f"  ALPHA {scf.mixing_alpha:g}", "  NBROYDEN 8", "&END MIXING",
        ]
    # no wavefunction restart files: every label starts from scratch in its own directory
    lines += ["&PRINT", "  &RESTART OFF", "  &END RESTART", "&END PRINT"]
    return lines


def _subsys_block(atoms: Atoms, settings: Cp2kSettings, periodic: bool) -> list[str]:
    cell = atoms.cell.array
    lines = ["&CELL"]
    lines += [f"  {name} [angstrom] {v[0]:.10f} {v[1]:.10f} {v[2]:.10f}" for name, v in zip("ABC", cell)]
    lines += [f"  PERIODIC {'XYZ' if periodic else 'NONE'}", "&END CELL", "&COORD"]
    lines += [f"  {a.symbol:<2s} {a.position[0]:16.10f} {a.position[1]:16.10f} {a.position[2]:16.10f}" for a in atoms]
    lines += ["&END COORD"]
    if not periodic:
        # the isolated Poisson solver wants the charge in the middle of the box
        lines += ["&TOPOLOGY", "  &CENTER_COORDINATES", "  &END CENTER_COORDINATES", "&END TOPOLOGY"]
    for symbol in sorted(set(atoms.get_chemical_symbols()), key=lambda s: atomic_numbers[s]):
        lines += [f"&KIND {symbol}"]
        if settings.method == "dft":
            lines += [f"  BASIS_SET {settings.basis_set}", f"  POTENTIAL {settings.pseudopotential}"]
        lines += ["&END KIND"]
    return lines


# ---------------------------------------------------------------------------------------------
# Reading the output (pure functions, tested on stored snippets)

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


# ---------------------------------------------------------------------------------------------
# Running one calculation


@dataclass
class RunResult:
    """How one CP2K process ended: its exit code (None if it had to be killed and never told),
    whether the walltime killed it, and whether it was killed as hung."""

    returncode: int | None
    timed_out: bool = False
    hung: bool = False


#: files whose growth shows that CP2K is alive
WATCHED_OUTPUTS = ("cp2k.out", "cp2k.log")


def run_in_directory(command: list[str], directory: Path, env: dict[str, str], walltime: float,
                     hang_timeout: float | None = None) -> RunResult:
    """Run ``command`` in ``directory`` (stdout and stderr to ``cp2k.log``) in its own process group.

    After ``walltime`` seconds, or once none of :data:`WATCHED_OUTPUTS` has grown for
    ``hang_timeout`` seconds (None: never), the whole group is killed: with a launcher (mpiexec,
    srun) the ranks are children, and killing only the launcher leaves them running.
    """
    with open(directory / "cp2k.log", "wb") as log:
        process = subprocess.Popen(
            command, cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return _watch(process, directory, walltime, hang_timeout)
        except BaseException:
            _kill_group(process)
            raise


def _watch(process: subprocess.Popen, directory: Path, walltime: float, hang_timeout: float | None) -> RunResult:
    start = time.monotonic()
    deadline = start + walltime
    # poll often enough to kill within a few percent of hang_timeout, rarely enough to cost nothing
    poll = min(1.0, hang_timeout / 10.0) if hang_timeout else walltime
    sizes, last_growth = _output_sizes(directory), start
    while True:
        now = time.monotonic()
        try:
            return RunResult(process.wait(timeout=max(0.0, min(poll, deadline - now))))
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now >= deadline:
            _kill_group(process)
            return RunResult(process.returncode, timed_out=True)
        if hang_timeout is not None:
            current = _output_sizes(directory)
            if current != sizes:
                sizes, last_growth = current, now
            elif now - last_growth >= hang_timeout:
                _kill_group(process)
                return RunResult(process.returncode, hung=True)


def _output_sizes(directory: Path) -> tuple[int, ...]:
    return tuple(os.stat(directory / name).st_size if (directory / name).exists() else -1 for name in WATCHED_OUTPUTS)


def _kill_group(process: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop a run and everything it started. An OpenMPI singleton (cp2k.psmp without mpiexec)
    starts an ``orted`` in a session of its own, out of reach of the process-group signal, so its
    descendants are also signalled by pid.
    """
    tree = _process_tree(process.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        # then SIGCONT: a stopped process (a hung run may be one) acts on a SIGTERM only once resumed
        signals = [(os.killpg, process.pid, sig)] + [(os.kill, pid, sig) for pid in tree] + [(os.killpg, process.pid, signal.SIGCONT)]
        for kill, target, how in signals:
            try:
                kill(target, how)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + grace
        while any(_alive(pid) for pid in tree[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(_alive(pid) for pid in tree[1:]):
            return


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc (only ``pid`` where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def in_isolated_box(atoms: Atoms, vacuum: float) -> Atoms:
    """A non-periodic structure centred in an orthorhombic box of its extent plus ``vacuum`` (A) on each side."""
    boxed = atoms.copy()
    extent = boxed.positions.max(axis=0) - boxed.positions.min(axis=0)
    boxed.set_cell(np.round(extent + 2.0 * vacuum, 6))
    boxed.center()
    return boxed


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
            run = run_in_directory(self.command(), directory, self.environment(), self.config.walltime, self.config.hang_timeout)
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
