"""CP2K's settings: what a label means (:class:`Cp2kMethod`) apart from how CP2K runs here
(:class:`Cp2kLaunch`), as ASE's calculators keep a template apart from a profile.

Users write one flat ``reference:`` section (:class:`Cp2kSettings`, both parts). A label's
identity (its settings hash, the frozen campaign a resume is checked against) is made of the
:class:`Cp2kMethod` fields only, so moving a campaign to another machine, another launcher or a
longer walltime keeps its labels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

from ase.data import atomic_numbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alcgap.reference.cp2k_sections import parse as parse_sections

#: where distributions put CP2K's data files (basis sets, potentials, dftd3.dat, xTB_parameters)
DATA_DIR_CANDIDATES = ("/usr/share/cp2k", "/usr/share/cp2k/data", "/usr/local/share/cp2k/data", "/opt/cp2k/data")

#: sections of the input that come from each structure, never from the settings
_GENERATED_SECTIONS = {("FORCE_EVAL", "SUBSYS", "COORD"), ("FORCE_EVAL", "SUBSYS", "CELL")}


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


class Cp2kMethod(BaseModel):
    """What a CP2K label means: every field changes the energy, the forces, or whether a
    structure gets a label at all. These fields, and only these, are a label's settings
    (:meth:`label_settings`).

    Energies are Kohn-Sham DFT (``method="dft"``, GPW with GTH pseudopotentials) or GFN1-xTB
    (``method="xtb"``, for cheap demonstrations). Cutoffs are in Rydberg, as in CP2K.
    """

    model_config = ConfigDict(extra="forbid")

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
    # The step limits and the mixing below decide which structures converge, so which get a
    # label at all, and have always been part of a label's settings (its hash).
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
    #: file names (inside data_dir) or paths of the basis-set and pseudopotential libraries; a
    #: label keeps the file name only: the same library on two machines gives the same labels
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
            tree = parse_sections(value, "input_sections")  # raises naming the line

            def walk(section, path):
                for child in section.sections:
                    where = path + (child.name.upper(),)
                    if where in _GENERATED_SECTIONS:
                        raise ValueError(f"input_sections: &{'/&'.join(where)} comes from each structure "
                                         "being labelled; leave it out")
                    walk(child, where)

            walk(tree, ())
        return value

    @model_validator(mode="after")
    def _default_scf_solver(self) -> "Cp2kMethod":
        if self.scf_solver is None:
            self.scf_solver = "ot" if self.method == "xtb" else "diagonalization"
        return self

    def label_settings(self) -> dict[str, Any]:
        """The settings that change a label: the :class:`Cp2kMethod` fields (never where or how
        CP2K runs), with library file names instead of paths."""
        dumped = self.model_dump(mode="json")
        out = {name: dumped[name] for name in Cp2kMethod.model_fields}
        # file names, not machine-specific paths: the same library on two machines is one label
        out["basis_file"] = Path(self.basis_file).name
        out["potential_file"] = Path(self.potential_file).name
        if not out.get("input_sections"):  # the labels of settings made before it existed stay the same labels
            out.pop("input_sections", None)
        if self.method == "xtb":  # fields xTB does not read
            for name in ("xc", "basis_set", "pseudopotential", "cutoff", "rel_cutoff", "basis_file", "potential_file", "dispersion"):
                out.pop(name)
        return out


class Cp2kLaunch(BaseModel):
    """How CP2K runs on this machine, and how a failed run is retried: nothing here changes a
    label that comes out, so these may differ between a campaign's start and its resume."""

    model_config = ConfigDict(extra="forbid")

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
    #: OT minimiser of the first attempt: "DIIS" (fewest steps where the gap is wide) or "CG"
    #: (always downhill; fewer steps where the gap is small, as in cells carved out of a melt).
    #: How the SCF gets to its minimum, not which minimum: here, beside the recovery ladder whose
    #: first OT rung is the same switch to CG
    ot_minimizer: Literal["DIIS", "CG"] = "DIIS"
    #: retry an unconverged SCF with the recovery ladder (see alcgap.reference._cp2k_recovery);
    #: each rung runs in its own sub-folder and is recorded in label.info["recovery"] (a rung
    #: that changes the physics is told by that record, not by the settings)
    scf_recovery: bool = True
    #: at most this many rungs (None: all of them, 4 for OT, 3 for diagonalisation)
    max_recovery_rungs: int | None = Field(None, ge=0)
    #: run a calculation killed at its walltime once more (a busy node may have slowed it)
    retry_timeout: bool = False
    #: CP2K data directory; default: $CP2K_DATA_DIR, next to the executable, or /usr/share/cp2k.
    #: Where the libraries are on this machine; which library is a method field (basis_file)
    data_dir: Path | None = None
    #: where the executable, the launcher and the data files are checked: "driver" (when the
    #: settings are made, before anything runs) or "compute" (for a login node without CP2K: by a
    #: first task on the MPI executor, where the labels run, before the campaign's first label;
    #: and again by each worker before its first calculation)
    check_on: Literal["driver", "compute"] = "driver"

    def data_path(self, name: str) -> Path:
        """``name`` as a path: absolute as given, otherwise inside ``data_dir``."""
        path = Path(name)
        return path if path.is_absolute() else Path(self.data_dir) / path


# Bases in this order so that a dump (the frozen campaign.yaml) lists the method first: pydantic
# puts inherited fields from the last base to the first.
class Cp2kSettings(Cp2kLaunch, Cp2kMethod):
    """Everything needed to label with CP2K, as written in a config's ``reference:`` section:
    the method (:class:`Cp2kMethod`) and how it runs here (:class:`Cp2kLaunch`). Validated
    before any CP2K run (``check_on``)."""

    kind: Literal["cp2k"] = "cp2k"

    @model_validator(mode="after")
    def _checked_where_asked(self) -> "Cp2kSettings":
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
