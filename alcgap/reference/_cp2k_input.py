"""The CP2K input of one structure: readable, as a person would write it, kept beside its output.

Also the spin state each structure runs with (:func:`multiplicity_of`) and the box a
non-periodic structure gets (:func:`in_isolated_box`), both written into the input.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from alcgap.reference._cp2k_recovery import ScfControls
from alcgap.reference._cp2k_settings import Cp2kSettings
from alcgap.reference.cp2k_sections import merged_input

# ---------------------------------------------------------------------------------------------
# Spin: the multiplicity of isolated atoms and dimers; the box of a non-periodic structure

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


def in_isolated_box(atoms: Atoms, vacuum: float) -> Atoms:
    """A non-periodic structure centred in an orthorhombic box of its extent plus ``vacuum`` (A) on each side."""
    boxed = atoms.copy()
    extent = boxed.positions.max(axis=0) - boxed.positions.min(axis=0)
    boxed.set_cell(np.round(extent + 2.0 * vacuum, 6))
    boxed.center()
    return boxed


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
