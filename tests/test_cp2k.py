"""CP2K as the reference: real PBE runs on small SiO2 cells and an O-O dimer scan, failures
classified from the output, settings rejected before any run, and the output parser on stored
snippets (tests/data/cp2k/README.md says where each comes from).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.units import GPa, Bohr, Hartree
from pydantic import ValidationError

from alcgap.dimers import dimer_curve
from alcgap.reference import Cp2kReference, Cp2kSettings, LabelStatus, classify_failure, make_reference, parse_cp2k_output
from alcgap.reference._cp2k_input import cp2k_input, default_multiplicity, unpaired_electrons
from alcgap.reference._cp2k_output import abort_message
from alcgap.reference._cp2k_settings import read_library_names
from alcgap.reference.base import isolated
from alcgap.structures import beta_cristobalite, rattled

DATA = Path(__file__).parent / "data" / "cp2k"
needs_cp2k = pytest.mark.skipif(
    shutil.which("cp2k.psmp") is None, reason="cp2k.psmp not on PATH (Debian: apt-get install cp2k)"
)

# Cheaper than the defaults (400 Ry, 5 A vacuum) so the real runs stay small; forces are still
# the exact derivative of this energy, which is what the finite-difference checks test.
# One OpenMP thread: with other work on the 2 cores, 2 threads made an O atom 5x slower (seen
# 137 s against 25 s): OpenMP ranks wait for each other when a core is taken.
FAST = dict(cutoff=300.0, rel_cutoff=50.0, isolated_vacuum=4.0)


def tetragonal_beta_cristobalite() -> Atoms:
    """The 12-atom tetragonal cell of beta-cristobalite (a/sqrt2, a/sqrt2, a), turned so that its
    cell is diagonal: half the cubic cell's cost, and CP2K keeps its fast orthorhombic grid
    kernels (the 6-atom fcc primitive cell was slower than that, on the general ones).
    """
    conventional = beta_cristobalite()
    a = conventional.cell[0, 0]
    basis = np.array([[a / 2, a / 2, 0.0], [-a / 2, a / 2, 0.0], [0.0, 0.0, a]])
    scaled = np.linalg.solve(basis.T, conventional.positions.T).T
    scaled = np.round(scaled, 8) % 1.0
    _, keep = np.unique(np.round(scaled, 6), axis=0, return_index=True)
    keep = np.sort(keep)
    symbols = np.array(conventional.get_chemical_symbols())[keep]
    return Atoms(symbols, scaled_positions=scaled[keep], cell=np.diag([a / np.sqrt(2), a / np.sqrt(2), a]), pbc=True)


def processes_in(directory: str) -> list[int]:
    """Pids of processes whose working directory is ``directory`` (a killed run must leave none)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == directory:
                found.append(int(pid))
        except OSError:
            continue
    return found


# --------------------------------------------------------------------------- parser, no CP2K


def test_parse_converged_2023_output():
    out = parse_cp2k_output((DATA / "converged_2023.1.out").read_text())
    assert out.energy == pytest.approx(-288.972584343950643 * Hartree, rel=1e-14)
    assert out.forces.shape == (24, 3)
    # first row, Hartree/Bohr -> eV/A
    np.testing.assert_allclose(out.forces[0], np.array([-0.12044188, -0.13256571, -0.13029711]) * Hartree / Bohr, rtol=1e-14)
    # STRESS| x-row 24.49 GPa (CP2K: positive = compressed); ASE's sign is the opposite
    assert out.stress.shape == (6,)
    assert out.stress[0] == pytest.approx(-2.44937156075e1 * GPa)
    assert out.stress[3] == pytest.approx(-1.09837753901 * GPa)  # yz
    assert out.stress[5] == pytest.approx(-1.94573438578 * GPa)  # xy
    assert out.cp2k_seconds == pytest.approx(135.342)
    assert classify_failure((DATA / "converged_2023.1.out").read_text(), 0) is None


def test_parse_later_cp2k_layout():
    out = parse_cp2k_output((DATA / "converged_layout_2025.out").read_text())
    assert out.energy == pytest.approx(-34.165955622311941 * Hartree)
    assert out.forces.shape == (3, 3)
    assert out.forces[0, 0] == pytest.approx(1.23456789e-2 * Hartree / Bohr)
    assert out.stress[2] == pytest.approx(-3.0 * GPa)


def test_scf_warning_of_2023_is_not_converged_although_energy_is_printed():
    text = (DATA / "scf_warning_2023.1.out").read_text()
    assert parse_cp2k_output(text).energy is not None  # the trap: numbers are there
    status, reason = classify_failure(text, returncode=0)
    assert status is LabelStatus.SCF_NOT_CONVERGED
    assert "SCF run NOT converged" in reason and "qs_scf.F:601" in reason


def test_scf_abort_of_2024_is_not_converged():
    status, reason = classify_failure((DATA / "scf_abort_2024.out").read_text(), returncode=1)
    assert status is LabelStatus.SCF_NOT_CONVERGED
    assert reason.startswith("SCF run NOT converged. To continue the calculation regardless")
    assert "IGNORE_CONVERGENCE_FAILURE" in reason


def test_input_error_abort_box_is_an_input_error_with_cp2k_message():
    text = (DATA / "input_error_2023.1.out").read_text()
    status, reason = classify_failure(text, returncode=1)
    assert status is LabelStatus.INPUT_ERROR
    assert reason == abort_message(text)
    assert "The requested basis set <NOSUCH-BASIS> for element <Si> was not found" in reason
    assert "aobasis/basis_set_types.F:1509" in reason
    assert "\\___/" not in reason and "O/|" not in reason


def test_truncated_output_and_crashes():
    text = (DATA / "truncated_2023.1.out").read_text()
    status, reason = classify_failure(text, returncode=0)
    assert status is LabelStatus.CRASHED and "PROGRAM ENDED AT" in reason
    assert classify_failure(text, returncode=-9)[1].startswith("cp2k killed by signal SIGKILL")
    assert classify_failure("", returncode=139)[0] is LabelStatus.CRASHED
    status, reason = classify_failure(text, returncode=None, timed_out=True, walltime=5)
    assert status is LabelStatus.TIMED_OUT and "5 s" in reason


def test_multiplicity_rules():
    assert [unpaired_electrons(s) for s in ("H", "O", "Si", "N", "Fe", "Cr", "Ne")] == [1, 2, 2, 3, 4, 6, 0]
    assert default_multiplicity(isolated("O")) == 3
    assert default_multiplicity(isolated("Si")) == 3
    # dimers: the sum of the atomic spins, the state that dissociates into ground-state atoms
    assert default_multiplicity(isolated("O2", [[0, 0, 0], [1.2, 0, 0]])) == 5
    assert default_multiplicity(isolated("SiO", [[0, 0, 0], [1.5, 0, 0]])) == 5
    assert default_multiplicity(isolated("H2", [[0, 0, 0], [0.7, 0, 0]])) == 3
    assert default_multiplicity(beta_cristobalite()) == 1


def test_library_names_are_read_per_element(tmp_path):
    library = tmp_path / "BASIS_TEST"
    library.write_text(
        "# In this file: a comment that starts with an element symbol\n"
        "O  DZVP-MOLOPT-SR-GTH DZVP-MOLOPT-SR-GTH-q6\n"
        "  1\n  2 0 2 5 2 2 1\n     10.3 0.1 0.2\n"
        "Si SZV-GTH\n"
    )
    assert read_library_names(library) == {"O": {"DZVP-MOLOPT-SR-GTH", "DZVP-MOLOPT-SR-GTH-Q6"}, "Si": {"SZV-GTH"}}


def test_missing_executable_is_rejected_by_name():
    with pytest.raises(ValidationError) as err:
        Cp2kSettings(executable="cp2k-no-such-binary.psmp")
    assert "executable" in str(err.value) and "apt-get install cp2k" in str(err.value)


# --------------------------------------------------------------------------- settings, before any run


@needs_cp2k
def test_missing_basis_file_is_rejected_by_name():
    with pytest.raises(ValidationError) as err:
        Cp2kSettings(basis_file="NO_SUCH_BASIS_FILE")
    assert "basis_file" in str(err.value) and "NO_SUCH_BASIS_FILE" in str(err.value)


@needs_cp2k
def test_unknown_basis_or_potential_is_rejected_before_any_run(tmp_path):
    with pytest.raises(ValueError, match=r"basis_set: 'NOSUCH-BASIS' for Si is not in .*BASIS_MOLOPT"):
        Cp2kReference(Cp2kSettings(basis_set="NOSUCH-BASIS"), ["Si", "O"], workdir=tmp_path)
    with pytest.raises(ValueError, match=r"pseudopotential: 'GTH-NOPE' for Si"):
        Cp2kReference(Cp2kSettings(pseudopotential="GTH-NOPE"), ["Si", "O"], workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing ran


@needs_cp2k
def test_mpich_launcher_for_an_openmpi_cp2k_is_rejected():
    mpich = Path(sys.prefix) / "bin" / "mpiexec"
    if not mpich.exists():
        pytest.skip("no MPICH mpiexec in this environment")
    with pytest.raises(ValidationError, match="launch_prefix"):
        Cp2kSettings(launch_prefix=[str(mpich), "-n", "2"])


@needs_cp2k
def test_make_reference_and_label_settings(tmp_path):
    reference = make_reference(Cp2kSettings(), ["Si", "O"], workdir=tmp_path)
    assert isinstance(reference, Cp2kReference) and reference.name == "cp2k"
    settings = reference.settings()
    assert settings["cutoff"] == 400.0 and settings["basis_set"] == "DZVP-MOLOPT-SR-GTH"
    for how_it_runs in ("launch_prefix", "omp_threads", "walltime", "executable", "data_dir"):
        assert how_it_runs not in settings
    faster = make_reference(Cp2kSettings(omp_threads=2, walltime=60, launch_prefix=["srun"] if shutil.which("srun") else []), ["Si", "O"], tmp_path)
    assert faster.settings_hash() == reference.settings_hash()
    assert make_reference(Cp2kSettings(cutoff=500), ["Si", "O"], tmp_path).settings_hash() != reference.settings_hash()


@needs_cp2k
def test_inputs_read_like_hand_written_ones(tmp_path):
    settings = Cp2kSettings()
    bulk = cp2k_input(beta_cristobalite(), settings, 1)
    assert "STRESS_TENSOR ANALYTICAL" in bulk and "PERIODIC XYZ" in bulk and "UKS" not in bulk
    assert "&FORCES ON" in bulk and "RUN_TYPE ENERGY_FORCE" in bulk and "&SMEAR ON" in bulk
    atom = cp2k_input(isolated("O"), settings, 3)
    assert "UKS" in atom and "MULTIPLICITY 3" in atom and "PERIODIC NONE" in atom and "POISSON_SOLVER MT" in atom
    assert "&OT" in atom and "STRESS_TENSOR NONE" in atom
    reference = Cp2kReference(settings, ["Si", "O"], workdir=tmp_path)
    forced = isolated("O")
    forced.info["multiplicity"] = 1
    boxed, multiplicity = reference.prepare(forced)
    assert multiplicity == 1 and np.allclose(boxed.cell.lengths(), 10.0)
    forced.info["multiplicity"] = 2
    assert reference.compute(forced).status is LabelStatus.PROGRAM_ERROR  # impossible with 8 electrons


# --------------------------------------------------------------------------- real CP2K runs


@pytest.fixture(scope="module")
def fast_pbe(tmp_path_factory):
    return Cp2kReference(Cp2kSettings(**FAST), ["Si", "O"], workdir=tmp_path_factory.mktemp("cp2k"))


@needs_cp2k
def test_pbe_24_atom_cristobalite_energy_forces_stress(fast_pbe):
    atoms = rattled(beta_cristobalite(), 0.05, seed=1)
    label = fast_pbe.compute(atoms)
    assert label.ok, label.reason
    assert label.forces.shape == (24, 3) and label.stress.shape == (6,)
    # PBE/GTH total energy of 8 SiO2: about -7863 eV (-289 Hartree)
    assert -7870.0 < label.energy < -7855.0
    # GPW's real-space grid breaks translational invariance a little (egg-box); seen here about
    # 1 eV/A net on 24 atoms at 300-400 Ry, 0.04 eV/A on 6 atoms at 600 Ry: bound it per atom
    assert np.linalg.norm(label.forces.sum(axis=0)) / len(atoms) < 0.1
    directory = Path(label.info["directory"])
    assert (directory / "cp2k.inp").exists() and "PROGRAM ENDED AT" in (directory / "cp2k.out").read_text()
    assert 0 < label.info["cp2k_seconds"] <= label.info["wall_seconds"]


@needs_cp2k
def test_pbe_forces_and_stress_are_derivatives_of_the_energy(fast_pbe):
    """Central differences of CP2K's own energy on the 12-atom cell (units and signs)."""
    atoms = rattled(tetragonal_beta_cristobalite(), 0.05, seed=4)
    assert len(atoms) == 12 and atoms.get_chemical_formula() == "O8Si4"
    label = fast_pbe.compute(atoms)
    assert label.ok, label.reason

    def energy(moved: Atoms) -> float:
        result = fast_pbe.compute(moved)
        assert result.ok, result.reason
        return result.energy

    delta = 0.005  # Angstrom
    atom, axis = atoms.get_chemical_symbols().index("O"), 0
    moved = [atoms.copy(), atoms.copy()]
    moved[0].positions[atom, axis] += delta
    moved[1].positions[atom, axis] -= delta
    fd_force = -(energy(moved[0]) - energy(moved[1])) / (2 * delta)

    eps = 0.002  # strain xx
    strained = []
    for sign in (1, -1):
        work = atoms.copy()
        work.set_cell(atoms.cell.array @ np.diag([1 + sign * eps, 1.0, 1.0]), scale_atoms=True)
        strained.append(energy(work))
    fd_stress = (strained[0] - strained[1]) / (2 * eps * atoms.get_volume())

    print(f"\nforce  O{atom} {'xyz'[axis]}: analytic {label.forces[atom, axis]:.5f} eV/A, finite difference {fd_force:.5f} eV/A")
    print(f"stress xx: analytic {label.stress[0] / GPa:.4f} GPa, finite difference {fd_stress / GPa:.4f} GPa")
    assert abs(label.forces[atom, axis]) > 0.1  # a real force, not a symmetric zero
    assert label.forces[atom, axis] == pytest.approx(fd_force, abs=1e-2)
    assert label.stress[0] == pytest.approx(fd_stress, abs=0.5 * GPa)


@needs_cp2k
def test_forced_scf_failure_is_reported_without_numbers(tmp_path):
    # without the recovery ladder (tests/test_cp2k_recovery.py climbs it)
    reference = Cp2kReference(Cp2kSettings(**{**FAST, "max_scf": 1, "eps_scf": 1e-8, "scf_recovery": False}), ["Si", "O"], workdir=tmp_path)
    label = reference.compute(tetragonal_beta_cristobalite())
    assert label.status is LabelStatus.SCF_NOT_CONVERGED and "recovery" not in label.info
    assert "SCF run NOT converged" in label.reason
    assert label.energy is None and label.forces is None and label.stress is None
    # CP2K 2023.1 did print numbers: only the warning tells
    assert "ENERGY| Total FORCE_EVAL" in (Path(label.info["directory"]) / "cp2k.out").read_text()


@needs_cp2k
def test_walltime_kills_the_run(tmp_path):
    reference = Cp2kReference(Cp2kSettings(**{**FAST, "walltime": 1.0}), ["Si", "O"], workdir=tmp_path)
    start = time.perf_counter()
    label = reference.compute(beta_cristobalite())
    assert time.perf_counter() - start < 15.0
    assert label.status is LabelStatus.TIMED_OUT and "walltime of 1 s" in label.reason
    assert label.energy is None
    assert "recovery" not in label.info  # retry_timeout is off by default: no second run
    assert processes_in(label.info["directory"]) == []


@needs_cp2k
def test_oxygen_dimer_goes_to_the_isolated_atom_limit(fast_pbe):
    """Open-shell O atoms (triplet) and O2 (quintet = sum of atomic spins): E(r) - 2 E(O) -> 0."""
    atom = fast_pbe.compute(isolated("O"))
    assert atom.ok, atom.reason
    assert atom.info["multiplicity"] == 3
    curve = dimer_curve(fast_pbe, ("O", "O"), np.array([1.0, 4.5]), {"O": atom.energy})
    print("\nO-O binding energy: " + ", ".join(f"{r:.1f} A: {e:+.4f} eV" for r, e in zip(curve.distances, curve.energies)))
    assert curve.failed == {}
    assert abs(curve.energy_at(4.5)) < 0.1  # seen: +0.016 eV
    assert curve.energy_at(1.0) > curve.energy_at(4.5)
    assert curve.energy_at(1.0) > 5.0  # the repulsive wall the auxiliary potential is fitted to


# --------------------------------------------------------------------------- user input sections
SECTIONS = """
&GLOBAL
  PRINT_LEVEL MEDIUM      ! more output than alcgap's LOW
&END GLOBAL
&FORCE_EVAL
  &DFT
    &SCF
      EPS_SCF 2.0E-7
    &END SCF
    &PRINT
      &MULLIKEN ON
      &END MULLIKEN
    &END PRINT
  &END DFT
&END FORCE_EVAL
"""


def test_input_sections_merge_into_the_generated_input():
    """Sections are matched by name (KIND also by element), keywords replace or add, a section
    parameter replaces the generated one; the structure's own sections are refused."""
    fragment = SECTIONS + """
&FORCE_EVAL
  &DFT
    &KPOINTS
      SCHEME MONKHORST-PACK 2 2 2
    &END KPOINTS
    &XC
      &XC_FUNCTIONAL PBE0
      &END XC_FUNCTIONAL
    &END XC
  &END DFT
  &SUBSYS
    &KIND O
      BASIS_SET TZVP-MOLOPT-GTH
    &END KIND
  &END SUBSYS
&END FORCE_EVAL
"""
    plain = cp2k_input(beta_cristobalite(), Cp2kSettings(), 1)
    merged = cp2k_input(beta_cristobalite(), Cp2kSettings(input_sections=fragment), 1)
    assert "PRINT_LEVEL MEDIUM" in merged and "PRINT_LEVEL LOW" not in merged
    assert merged.count("EPS_SCF") == 1 and "EPS_SCF 2.0E-7" in merged
    assert "SCHEME MONKHORST-PACK 2 2 2" in merged and "&MULLIKEN ON" in merged
    assert "&XC_FUNCTIONAL PBE0" in merged and "&XC_FUNCTIONAL PBE\n" not in merged
    o_kind = merged.split("&KIND O", 1)[1].split("&END KIND", 1)[0]
    si_kind = merged.split("&KIND Si", 1)[1].split("&END KIND", 1)[0]
    assert "TZVP-MOLOPT-GTH" in o_kind and "DZVP-MOLOPT-SR-GTH" not in o_kind and "DZVP-MOLOPT-SR-GTH" in si_kind
    assert merged.count("&COORD") == 1 and merged.count("Si ") == plain.count("Si ")  # the structure untouched
    # without sections the input is the built-in one, and so is the label's identity
    assert cp2k_input(beta_cristobalite(), Cp2kSettings(input_sections=None), 1) == plain
    assert "input_sections" not in Cp2kSettings().label_settings()
    assert Cp2kSettings(input_sections=SECTIONS).label_settings()["input_sections"] == SECTIONS


@pytest.mark.parametrize("fragment, words", [
    ("&FORCE_EVAL\n  &DFT\n&END FORCE_EVAL\n", ["input_sections, line 3", "ends &DFT, which is still open"]),
    ("&FORCE_EVAL\n  &DFT\n  &END DFT\n", ["&FORCE_EVAL is never closed"]),
    ("EPS_SCF 1e-7\n", ["keyword 'EPS_SCF' outside any section"]),
    ("&FORCE_EVAL\n &SUBSYS\n  &COORD\n   O 0 0 0\n  &END COORD\n &END SUBSYS\n&END FORCE_EVAL\n",
     ["&FORCE_EVAL/&SUBSYS/&COORD comes from each structure"]),
], ids=["crossed-end", "unclosed", "bare-keyword", "coordinates"])
def test_a_malformed_input_section_is_refused_naming_the_line(fragment, words):
    with pytest.raises(ValidationError) as err:
        Cp2kSettings(input_sections=fragment)
    for text in words:
        assert text in str(err.value)


@needs_cp2k
def test_input_sections_reach_cp2k_and_a_section_cp2k_refuses_is_an_input_error(tmp_path):
    """Real xTB runs of a small molecule: the merged input is the one kept and run (CP2K reports
    the merged EPS_SCF and prints the Mulliken charges it was asked for); a keyword CP2K does not
    know fails once, as an input error with CP2K's own words, with no recovery rung."""
    molecule = Atoms("OSiO", positions=[[2.0, 3, 3], [3.55, 3, 3], [5.1, 3, 3]], cell=[7, 6, 6], pbc=True)
    good = Cp2kReference(Cp2kSettings(method="xtb", walltime=120, input_sections=SECTIONS), ["Si", "O"],
                         workdir=tmp_path / "good")
    label = good.compute(molecule)
    assert label.ok, label.reason
    folder = Path(label.info["directory"])
    assert "EPS_SCF 2.0E-7" in (folder / "cp2k.inp").read_text()
    output = (folder / "cp2k.out").read_text()
    assert "MULLIKEN POPULATION ANALYSIS" in output
    assert "2.00E-07" in output  # CP2K's echo of the SCF settings it ran with
    bad = Cp2kReference(Cp2kSettings(method="xtb", walltime=120, input_sections=SECTIONS.replace(
        "EPS_SCF 2.0E-7", "NO_SUCH_KEYWORD 1")), ["Si", "O"], workdir=tmp_path / "bad")
    label = bad.compute(molecule)
    assert label.status is LabelStatus.INPUT_ERROR and label.fatal
    assert "NO_SUCH_KEYWORD" in label.reason
    assert "recovery" not in label.info


# --------------------------------------------------------------------------- checks where CP2K runs
def test_check_on_compute_defers_the_machine_checks_to_where_the_labels_run(tmp_path):
    """A login node without CP2K: the settings are made there unchecked; the worker checks them
    before its first calculation, and a machine that cannot run them fails that label as an input
    error (labelling stops) naming the field."""
    missing = Cp2kSettings(method="xtb", executable="no-such-cp2k.psmp", check_on="compute")
    assert missing.data_dir is None  # nothing looked up on the driver
    with pytest.raises(ValueError, match="executable: 'no-such-cp2k.psmp' is not on PATH"):
        missing.on_this_machine()
    label = Cp2kReference(missing, ["Si", "O"], workdir=tmp_path).compute(isolated("O"))
    assert label.status is LabelStatus.INPUT_ERROR and label.fatal and "executable" in label.reason
    with pytest.raises(ValidationError, match="set check_on: compute"):  # the driver-side message says how
        Cp2kSettings(method="xtb", executable="no-such-cp2k.psmp")
    assert "check_on" not in missing.label_settings()  # where it is checked does not change a label


@needs_cp2k
def test_check_on_compute_finds_cp2k_and_its_data_where_it_runs(tmp_path):
    reference = Cp2kReference(Cp2kSettings(method="xtb", check_on="compute", walltime=60), ["Si", "O"], workdir=tmp_path)
    assert Path(reference.check_here(), "xTB_parameters").is_file()
    assert reference.compute(isolated("O")).ok


@needs_cp2k
def test_a_campaign_checks_its_reference_on_the_compute_side_before_any_label(tmp_path):
    from alcgap.config import ConfigError
    from alcgap.store import LabelStore
    from alcgap.workflow.campaign import run_campaign

    config = {"species": ["Si", "O"], "reference": {"kind": "cp2k", "method": "xtb", "check_on": "compute",
                                                    "executable": "no-such-cp2k.psmp"}}
    with pytest.raises(ConfigError, match="check where the labels run failed: .*executable: 'no-such-cp2k.psmp'"):
        run_campaign(config, tmp_path / "run")
    assert LabelStore(tmp_path / "run" / "data.db").rows(status=None) == []
    assert not (tmp_path / "run" / "iter-000" / "state.json").exists()
