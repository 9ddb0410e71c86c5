"""Resilient CP2K labelling: the SCF recovery ladder, input errors that stop labelling, hung and
timed-out runs, and the too-close-atoms check. Real CP2K (mostly GFN1-xTB, seconds per run) for
every capability; stored or copied CP2K texts only for the parsers.
"""

from __future__ import annotations

import difflib
import itertools
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from alcgap.reference import Cp2kReference, Cp2kSettings, LabelStatus, classify_failure
from alcgap.reference._cp2k_input import cp2k_input
from alcgap.reference._cp2k_output import is_input_error
from alcgap.reference._cp2k_recovery import ScfControls, climb, scf_ladder
from alcgap.reference.base import Label, isolated
from alcgap.reference.contacts import (
    DEFAULT_FRACTION,
    default_contact_limits,
    too_close_pairs,
)
from alcgap.store import LabelStore, Provenance
from alcgap.structures import beta_cristobalite, rattled

needs_cp2k = pytest.mark.skipif(
    shutil.which("cp2k.psmp") is None, reason="cp2k.psmp not on PATH (Debian: apt-get install cp2k)"
)
FAST = {"cutoff": 300.0, "rel_cutoff": 50.0, "isolated_vacuum": 4.0}


def changed_lines(before: str, after: str) -> tuple[set[str], set[str]]:
    """(lines only in ``before``, lines only in ``after``), stripped: what an edit of an input did."""
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return ({d[2:].strip() for d in diff if d.startswith("- ")}, {d[2:].strip() for d in diff if d.startswith("+ ")})


def processes_under(root: Path) -> list[int]:
    """Pids of processes whose working directory is inside ``root``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(str(root)):
                found.append(int(pid))
        except OSError:
            continue
    return found


# --------------------------------------------------------------------------- the ladder, no CP2K


def test_ot_ladder_follows_custodian_and_accumulates():
    base = ScfControls(max_scf=3, outer_max_scf=1)
    rungs = scf_ladder("ot", base)
    assert [r.name for r in rungs] == ["ot_cg", "ot_3pnt_more_steps", "ot_preconditioner_full_all", "ot_stepsize_0.05"]
    assert rungs[0].changes == {"SCF/OT/MINIMIZER": "CG"}
    assert rungs[1].changes == {"SCF/OT/LINESEARCH": "3PNT", "SCF/MAX_SCF": 50, "SCF/OUTER_SCF/MAX_SCF": 8}
    # the input already uses FULL_SINGLE_INVERSE (custodian's target), so the rung tries FULL_ALL
    assert rungs[2].changes == {"SCF/OT/PRECONDITIONER": "FULL_ALL"}
    assert rungs[3].changes == {"SCF/OT/STEPSIZE": 0.05}
    last = rungs[-1].controls  # cumulative: every earlier change is kept
    assert (last.ot_minimizer, last.ot_linesearch, last.max_scf, last.outer_max_scf, last.ot_preconditioner, last.ot_stepsize) == (
        "CG", "3PNT", 50, 8, "FULL_ALL", 0.05)
    # from another preconditioner, the rung goes to custodian's FULL_SINGLE_INVERSE
    other = scf_ladder("ot", ScfControls(max_scf=3, outer_max_scf=1, ot_preconditioner="FULL_KINETIC"))
    assert other[2].changes == {"SCF/OT/PRECONDITIONER": "FULL_SINGLE_INVERSE"}
    # a rung never weakens a setting: 200 steps stay 200, 12 outer cycles stay 12
    generous = scf_ladder("ot", ScfControls(max_scf=200, outer_max_scf=12))
    assert generous[1].changes == {"SCF/OT/LINESEARCH": "3PNT"}


def test_diagonalization_ladder_damps_mixing_then_smears():
    rungs = scf_ladder("diagonalization", ScfControls(max_scf=50, outer_max_scf=10, mixing_alpha=0.4, electronic_temperature=300.0))
    assert [r.name for r in rungs] == ["broyden_alpha_0.1", "alpha_0.05_more_steps", "more_smearing"]
    assert rungs[0].changes == {"SCF/MIXING/ALPHA": 0.1}
    assert rungs[1].changes == {"SCF/MIXING/ALPHA": 0.05, "SCF/MAX_SCF": 100}
    assert rungs[2].changes == {"SCF/SMEAR/ELECTRONIC_TEMPERATURE [K]": 1000.0}
    assert rungs[2].controls.mixing_alpha == 0.05 and rungs[2].controls.max_scf == 100
    # from other mixing: Broyden is set; a rung that would change nothing is left out
    pulay = scf_ladder("diagonalization", ScfControls(max_scf=50, outer_max_scf=10, mixing_method="PULAY_MIXING", mixing_alpha=0.05))
    assert pulay[0].changes == {"SCF/MIXING/METHOD": "BROYDEN_MIXING"}
    damped = scf_ladder("diagonalization", ScfControls(max_scf=300, outer_max_scf=10, mixing_alpha=0.05, electronic_temperature=2000.0))
    assert [r.name for r in damped] == ["alpha_0.05_more_steps", "more_smearing"]
    assert damped[0].changes == {"SCF/MAX_SCF": 600} and damped[1].changes == {"SCF/SMEAR/ELECTRONIC_TEMPERATURE [K]": 4000.0}


@needs_cp2k
def test_rung_inputs_differ_from_the_base_only_where_intended():
    atoms = beta_cristobalite()
    for settings, expected in [
        (Cp2kSettings(method="xtb", max_scf=3, outer_max_scf=1), [
            ({"MINIMIZER DIIS"}, {"MINIMIZER CG"}),
            ({"MAX_SCF 3", "MAX_SCF 1"}, {"MAX_SCF 50", "MAX_SCF 8", "LINESEARCH 3PNT"}),
            ({"PRECONDITIONER FULL_SINGLE_INVERSE"}, {"PRECONDITIONER FULL_ALL"}),
            (set(), {"STEPSIZE 0.05"}),
        ]),
        (Cp2kSettings(**FAST), [
            ({"ALPHA 0.4"}, {"ALPHA 0.1"}),
            ({"ALPHA 0.1", "MAX_SCF 50"}, {"ALPHA 0.05", "MAX_SCF 100"}),
            ({"ELECTRONIC_TEMPERATURE [K] 300"}, {"ELECTRONIC_TEMPERATURE [K] 1000"}),
        ]),
    ]:
        base = ScfControls.from_settings(settings)
        previous = cp2k_input(atoms, settings, 1)
        assert cp2k_input(atoms, settings, 1, base) == previous  # the base controls change nothing
        rungs = scf_ladder(settings.scf_solver, base)
        assert len(rungs) == len(expected)
        for rung, (removed, added) in zip(rungs, expected):
            text = cp2k_input(atoms, settings, 1, rung.controls)
            assert changed_lines(previous, text) == (removed, added), rung.name
            previous = text


@needs_cp2k
def test_recovery_settings_do_not_change_the_settings_hash(tmp_path):
    default = Cp2kReference(Cp2kSettings(), ["Si", "O"], workdir=tmp_path)
    other = Cp2kReference(Cp2kSettings(scf_recovery=False, max_recovery_rungs=1, hang_timeout=None, retry_timeout=True), ["Si", "O"], workdir=tmp_path)
    assert other.settings_hash() == default.settings_hash()
    assert "hang_timeout" not in default.settings() and "scf_recovery" not in default.settings()


def test_a_rung_refused_by_cp2k_is_a_ladder_fault_not_a_fatal_input_error(tmp_path):
    """The one path real CP2K cannot show without a broken ladder: stand-in attempts."""
    rungs = scf_ladder("ot", ScfControls(max_scf=3, outer_max_scf=1))
    outcomes = iter([Label(LabelStatus.SCF_NOT_CONVERGED, reason="SCF run NOT converged"),
                     Label(LabelStatus.INPUT_ERROR, reason="found an unknown keyword LINESEARCH")])
    seen = []

    def attempt(where, controls):
        seen.append((where.name, controls))
        return next(outcomes)

    first = Label(LabelStatus.SCF_NOT_CONVERGED, reason="SCF run NOT converged")
    label, records = climb(attempt, rungs, tmp_path, first)
    assert [name for name, _ in seen] == ["rung-1-ot_cg", "rung-2-ot_3pnt_more_steps"]  # stopped there
    assert label.status is LabelStatus.PROGRAM_ERROR and not label.fatal
    assert "ot_3pnt_more_steps" in label.reason and "LINESEARCH" in label.reason
    assert [r["status"] for r in records] == ["scf_not_converged", "input_error"]


# --------------------------------------------------------------------------- classification, stored texts

# abort boxes printed by cp2k 2023.1 here, for inputs edited by hand (copied verbatim)
UNKNOWN_KEYWORD_BOX = """
 *******************************************************************************
 *   ___                                                                       *
 *  /   \\                                                                      *
 * [ABORT]                                                                     *
 *  \\___/          found an unknown keyword NOSUCHKEYWORD in section OT        *
 *    |                                                                        *
 *  O/|                                                                        *
 * /| |                                                                        *
 * / \\                                               input/input_parsing.F:246 *
 *******************************************************************************
"""
XTB_CHARGES_TEXT = """
     2 Mixing/Diag.0.40E+00    0.0     1.09732095       -69.1722921006  2.07E+01
 Charge outside chemical range:  Kind Atom=  2    23   Limit=2.00  Charge= -3.01

 *** WARNING in xtb_matrices.F:1688 :: Atomic charges outside chemical   ***
 *** range were detected. Switch-off CHECK_ATOMIC_CHARGES keyword in the ***
 *** &xTB section if you want to force to continue the calculation.      ***


 *******************************************************************************
 *   ___                                                                       *
 *  /   \\                                                                      *
 * [ABORT]                                                                     *
 *  \\___/                               xTB Charges                            *
 *    |                                                                        *
 *  O/|                                                                        *
 * /| |                                                                        *
 * / \\                                                     xtb_matrices.F:1691 *
 *******************************************************************************
"""


def test_input_errors_are_told_apart_from_other_aborts():
    status, reason = classify_failure(UNKNOWN_KEYWORD_BOX, returncode=1)
    assert status is LabelStatus.INPUT_ERROR
    assert reason == "found an unknown keyword NOSUCHKEYWORD in section OT input/input_parsing.F:246"
    assert Label(status, reason=reason).fatal and not Label(LabelStatus.SCF_NOT_CONVERGED).fatal
    # messages (as abort_message joins them) of other input errors cp2k 2023.1 printed here
    for message in [
        "invalid value for enumeration:FOO input/input_enumeration_types.F:215",
        "unknown subsection OTX of section SCF input/input_parsing.F:185",
        "A floating point type object was expected, found <abc>, File: 'cp2k.inp', Line: 24, Column: 1, Chunk: <abc> input/cp_parser_methods.F:1163",
        "The requested atomic potential <GTH-NOPE> for element <Si> was not found in the potential file </usr/share/cp2k/GTH_POTENTIALS> subsys/external_potential_types.F:2324",
        "The specified OLD file </nonexist/GTH> cannot be opened. It does not exist. Data directory path: /usr/share/cp2k common/cp_files.F:396",
        "Full_kinetic not available for semi-empirical methods preconditioner.F:330",
    ]:
        assert is_input_error(message), message
    # a numerical failure of the run itself is not an input error (message as CP2K words it)
    assert not is_input_error("Cholesky decompose failed: the matrix is not positive definite or ill-conditioned. fm/cp_fm_cholesky.F:93")


def test_diverging_xtb_charges_are_an_scf_failure_for_the_ladder():
    status, reason = classify_failure(XTB_CHARGES_TEXT, returncode=1)
    assert status is LabelStatus.SCF_NOT_CONVERGED
    assert reason.startswith("SCF diverged: atomic charges outside the chemical range") and "xtb_matrices.F:1691" in reason
    # the same abort without the charge warning is not taken for an SCF failure
    assert classify_failure(XTB_CHARGES_TEXT.split("*** WARNING")[0] + XTB_CHARGES_TEXT.split("***\n\n\n")[1], 1)[0] is LabelStatus.PROGRAM_ERROR
    assert classify_failure("", None, hung=3.0) == (LabelStatus.HUNG, "killed as hung: its output did not grow for 3 s")


# --------------------------------------------------------------------------- atoms too close, no CP2K


def test_default_contact_limits_are_half_the_covalent_radii_sums():
    limits = default_contact_limits(["O", "Si"])
    assert DEFAULT_FRACTION == 0.5
    assert limits == pytest.approx({("Si", "Si"): 1.11, ("Si", "O"): 0.885, ("O", "O"): 0.66})
    assert default_contact_limits(["Si", "O"], fraction=1.0)[("Si", "O")] == pytest.approx(1.77)
    with pytest.raises(ValueError, match="fraction"):
        default_contact_limits(["Si"], fraction=0.0)


def test_too_close_pairs_finds_contacts_through_periodic_boundaries():
    limits = default_contact_limits(["Si", "O"])
    crystal = beta_cristobalite()
    assert too_close_pairs(crystal, limits) == []  # Si-O 1.55 A
    squeezed = crystal.copy()
    symbols = squeezed.get_chemical_symbols()
    o = symbols.index("O")
    silicons = [i for i, s in enumerate(symbols) if s == "Si"]
    si = silicons[int(np.argmin(squeezed.get_distances(o, silicons, mic=True)))]
    bond = squeezed.get_distance(o, si, mic=True, vector=True)
    squeezed.positions[o] += bond * (1.0 - 0.8 / np.linalg.norm(bond))  # now 0.8 A from that Si
    (contact,) = too_close_pairs(squeezed, limits)
    assert {contact.i, contact.j} == {o, si} and contact.pair == ("Si", "O")
    assert contact.distance == pytest.approx(0.8) and contact.limit == pytest.approx(0.885)
    # across the cell boundary: two O atoms 0.5 A apart through the periodic face, 4.5 A without it
    box = Atoms("O2", positions=[[0.2, 1, 1], [4.7, 1, 1]], cell=[5, 5, 5], pbc=True)
    (contact,) = too_close_pairs(box, {("O", "O"): 0.66})
    assert (contact.i, contact.j) == (0, 1) and contact.distance == pytest.approx(0.5)
    box.pbc = False
    assert too_close_pairs(box, {("O", "O"): 0.66}) == []
    # an atom meets its own image in a cell too small; keys may come in either order
    tiny = Atoms("SiO", positions=[[0, 0, 0], [0.3, 0.3, 0.3]], cell=[0.9, 3, 3], pbc=True)
    found = too_close_pairs(tiny, {("O", "Si"): 0.885, ("O", "O"): 0.66, ("Si", "Si"): 1.11})
    assert (0, 0) in {(c.i, c.j) for c in found} and (0, 1) in {(c.i, c.j) for c in found}
    assert [c.distance for c in found] == sorted(c.distance for c in found)
    with pytest.raises(ValueError, match="Si-Si"):
        too_close_pairs(crystal, {("Si", "O"): 0.9, ("O", "O"): 0.7})


@needs_cp2k
@pytest.mark.integration
def test_compute_does_not_refuse_close_atoms_dimer_scans_stay_exempt(tmp_path):
    dimer = isolated("SiO", [[0, 0, 0], [0.8, 0, 0]])
    assert too_close_pairs(dimer, default_contact_limits(["Si", "O"]))
    label = Cp2kReference(Cp2kSettings(method="xtb"), ["Si", "O"], workdir=tmp_path).compute(dimer)
    assert label.ok, label.reason
    assert (Path(label.info["directory"]) / "cp2k.out").exists()


# --------------------------------------------------------------------------- the ladder, real CP2K


@pytest.fixture(scope="module")
def xtb_ot(tmp_path_factory):
    return Cp2kReference(Cp2kSettings(method="xtb"), ["Si", "O"], workdir=tmp_path_factory.mktemp("xtb-ot"))


def rung_inputs(label: Label) -> list[str]:
    return [(Path(record["directory"]) / "cp2k.inp").read_text() for record in label.info["recovery"]]


@needs_cp2k
@pytest.mark.integration
def test_ot_ladder_converges_an_scf_cut_to_3_steps(tmp_path, xtb_ot):
    """xTB, 24 atoms, OT: 20 DIIS steps are needed; MAX_SCF 3 with one outer cycle fails."""
    atoms = rattled(beta_cristobalite(), 0.05, seed=1)
    reference = Cp2kReference(Cp2kSettings(method="xtb", max_scf=3, outer_max_scf=1), ["Si", "O"], workdir=tmp_path)
    label = reference.compute(atoms)
    assert label.ok, label.reason
    records = label.info["recovery"]
    assert [(r["rung"], r["name"], r["status"]) for r in records] == [(1, "ot_cg", "scf_not_converged"), (2, "ot_3pnt_more_steps", "ok")]
    assert label.info["recovered_by"] == "ot_3pnt_more_steps"
    directory = Path(label.info["directory"])
    assert label.info["label_directory"] == str(directory / "rung-2-ot_3pnt_more_steps")
    assert sorted(p.name for p in directory.iterdir() if p.is_dir()) == ["rung-1-ot_cg", "rung-2-ot_3pnt_more_steps"]
    # every attempt keeps its input and output; each rung's input changes what it says
    base = (directory / "cp2k.inp").read_text()
    rung1, rung2 = rung_inputs(label)
    assert changed_lines(base, rung1) == ({"MINIMIZER DIIS"}, {"MINIMIZER CG"})
    assert changed_lines(rung1, rung2) == ({"MAX_SCF 3", "MAX_SCF 1"}, {"MAX_SCF 50", "MAX_SCF 8", "LINESEARCH 3PNT"})
    assert "SCF run NOT converged" in (directory / "rung-1-ot_cg" / "cp2k.out").read_text()
    # the recovered label is the label: same minimum as with the normal settings
    normal = xtb_ot.compute(atoms)
    assert normal.ok and "recovery" not in normal.info
    assert label.energy == pytest.approx(normal.energy, abs=1e-4)
    np.testing.assert_allclose(label.forces, normal.forces, atol=2e-3)


@needs_cp2k
@pytest.mark.integration
def test_diagonalisation_ladder_rescues_xtb_broyden_mixing(tmp_path, xtb_ot):
    """A real fault of the default settings: xTB with Broyden mixing (ALPHA 0.4, 50 steps) fails
    on this rattled cell (seen with cp2k 2023.1: the charges diverge in step 2); only the third
    rung (1000 K smearing) converges it."""
    atoms = rattled(beta_cristobalite(), 0.1, seed=3)
    reference = Cp2kReference(Cp2kSettings(method="xtb", scf_solver="diagonalization"), ["Si", "O"], workdir=tmp_path)
    label = reference.compute(atoms)
    assert label.ok, label.reason
    records = label.info["recovery"]
    assert [(r["name"], r["status"]) for r in records] == [
        ("broyden_alpha_0.1", "scf_not_converged"), ("alpha_0.05_more_steps", "scf_not_converged"), ("more_smearing", "ok")]
    assert records[2]["changes"] == {"SCF/SMEAR/ELECTRONIC_TEMPERATURE [K]": 1000.0}
    inputs = [(Path(label.info["directory"]) / "cp2k.inp").read_text(), *rung_inputs(label)]
    assert [changed_lines(a, b) for a, b in itertools.pairwise(inputs)] == [
        ({"ALPHA 0.4"}, {"ALPHA 0.1"}),
        ({"ALPHA 0.1", "MAX_SCF 50"}, {"ALPHA 0.05", "MAX_SCF 100"}),
        ({"ELECTRONIC_TEMPERATURE [K] 300"}, {"ELECTRONIC_TEMPERATURE [K] 1000"}),
    ]
    # an insulator: 1000 K of smearing leaves the energy where OT (integer occupations) puts it
    normal = xtb_ot.compute(atoms)
    assert normal.ok
    assert abs(label.energy - normal.energy) / len(atoms) < 1e-4


@needs_cp2k
@pytest.mark.integration
def test_exhausted_ladder_is_stored_as_failed_with_every_rung(tmp_path):
    """Seen with cp2k 2023.1: this cell defeats the whole diagonalisation ladder under xTB."""
    atoms = rattled(beta_cristobalite(), 0.2, seed=4)
    reference = Cp2kReference(Cp2kSettings(method="xtb", scf_solver="diagonalization"), ["Si", "O"], workdir=tmp_path)
    label = reference.compute(atoms)
    assert label.status is LabelStatus.SCF_NOT_CONVERGED and label.energy is None and not label.fatal
    names = ["broyden_alpha_0.1", "alpha_0.05_more_steps", "more_smearing"]
    assert [(r["name"], r["status"]) for r in label.info["recovery"]] == [(n, "scf_not_converged") for n in names]
    assert "3 rungs tried: " + ", ".join(names) in label.reason
    assert "recovered_by" not in label.info
    # the store keeps the rungs with the failed row
    store = LabelStore(tmp_path / "labels.db")
    row_id = store.add(atoms, label, reference.name, reference.settings_hash(), Provenance(0, "bootstrap"))
    (stored,) = [r for r in store.rows(status=None) if r.id == row_id]
    assert stored.data["label_info"]["recovery"] == label.info["recovery"]
    assert stored.data["label_reason"] == label.reason


# --------------------------------------------------------------------------- input errors, hangs, time-outs


@needs_cp2k
@pytest.mark.integration
def test_unknown_basis_past_validation_fails_once_as_a_fatal_input_error(tmp_path):
    reference = Cp2kReference(Cp2kSettings(**{**FAST, "max_scf": 1, "retry_timeout": True}), ["Si", "O"], workdir=tmp_path)
    # the settings validator refuses an unknown name; model_copy skips it, as a hand-edited input would
    reference.config = reference.config.model_copy(update={"basis_set": "NOSUCH-BASIS"})
    start = time.perf_counter()
    label = reference.compute(beta_cristobalite())
    assert time.perf_counter() - start < 15.0
    assert label.status is LabelStatus.INPUT_ERROR and label.fatal
    assert "The requested basis set <NOSUCH-BASIS> for element" in label.reason and "was not found" in label.reason
    assert "recovery" not in label.info
    directory = Path(label.info["directory"])
    assert [p.name for p in directory.iterdir() if p.is_dir()] == []  # one run, no retry of any kind


@needs_cp2k
@pytest.mark.integration
def test_hung_cp2k_is_killed_long_before_its_walltime(tmp_path):
    """A CP2K that stops (SIGSTOP: alive, no progress, as a rank blocked on a dead peer) is
    killed once its output has not grown for hang_timeout, and no process is left."""
    settings = Cp2kSettings(method="xtb", hang_timeout=3.0, walltime=300.0)
    atoms = beta_cristobalite()
    # no false alarm: the same run, undisturbed, never falls silent for 3 s (seen: 0.5 s at most)
    assert Cp2kReference(settings, ["Si", "O"], workdir=tmp_path / "control").compute(atoms).ok
    workdir = tmp_path / "hang"
    stopped: list[int] = []

    def stop_cp2k():
        deadline = time.monotonic() + 30
        while not stopped and time.monotonic() < deadline:
            for pid in processes_under(workdir):
                try:
                    running = Path(f"/proc/{pid}/comm").read_text().strip() == "cp2k.psmp"
                    if running and any(workdir.rglob("cp2k.out")):
                        os.kill(pid, signal.SIGSTOP)
                        stopped.append(pid)
                except OSError:
                    pass
            time.sleep(0.05)

    stopper = threading.Thread(target=stop_cp2k)
    start = time.perf_counter()
    stopper.start()
    label = Cp2kReference(settings, ["Si", "O"], workdir=workdir).compute(atoms)
    elapsed = time.perf_counter() - start
    stopper.join()
    print(f"\nhung run killed after {elapsed:.1f} s (hang_timeout 3 s, walltime 300 s)")
    assert stopped, "the test could not stop cp2k"
    assert label.status is LabelStatus.HUNG and "did not grow for 3 s" in label.reason
    assert elapsed < 20.0  # 3 s of silence, then SIGTERM (+SIGCONT): far below the walltime
    assert label.energy is None and "recovery" not in label.info
    assert processes_under(workdir) == []


@needs_cp2k
@pytest.mark.integration
def test_timed_out_run_is_retried_once_when_allowed(tmp_path):
    reference = Cp2kReference(Cp2kSettings(**{**FAST, "walltime": 1.0, "retry_timeout": True}), ["Si", "O"], workdir=tmp_path)
    start = time.perf_counter()
    label = reference.compute(beta_cristobalite())
    assert time.perf_counter() - start < 30.0
    assert label.status is LabelStatus.TIMED_OUT
    (record,) = label.info["recovery"]
    directory = Path(label.info["directory"])
    assert record["name"] == "timeout_retry" and record["status"] == "timed_out"
    assert record["directory"] == str(directory / "retry-timeout") == label.info["label_directory"]
    assert (directory / "retry-timeout" / "cp2k.inp").read_text() == (directory / "cp2k.inp").read_text()
    assert processes_under(tmp_path) == []
