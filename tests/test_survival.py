"""The stress test's parts on the real LAMMPS driver: the adaptive timestep, the failure classes,
the survival table (issue 17). The Vashishta SiO2 potential is the stiff repulsion here: at
20,000 K a 3 fs step throws atoms through its walls."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from alcgap.md.forces import ForceField
from alcgap.md.lammps import run_md
from alcgap.md.protocols import nvt
from alcgap.reference import vashishta_sio2_commands
from alcgap.survival import held, read_sweep, survival_sweep, survival_table, write_sweep
from alcgap.structures import beta_cristobalite
from alcgap.md.failures import classify_md_failure

VASHISHTA = ForceField.classical(vashishta_sio2_commands(), ["Si", "O"])
CUTOFFS = {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8}
#: the stated fraction of an aux cutoff that the composite's pairs stay above
HELD = 0.9
STEPS = 1000


@pytest.mark.integration
def test_an_adaptive_timestep_integrates_what_a_fixed_one_loses():
    start = beta_cristobalite()
    fixed = run_md(start, VASHISHTA, [nvt(600, 20000.0)], timestep=3.0, seed=1, sample_every=100)
    assert fixed.stopped_early and classify_md_failure(fixed.stop_reason) == ("lost_atoms", "integration")
    adaptive = run_md(start, VASHISHTA, [nvt(600, 20000.0)], timestep=3.0, seed=1, sample_every=100,
                      max_displacement=0.1)
    assert not adaptive.stopped_early and adaptive.steps_done == 600
    assert adaptive.smallest_timestep_fs < 1.5 and 0 < adaptive.elapsed_fs < 1800.0
    # where no atom is that fast, the adaptive run is the fixed one, step for step
    slow = [run_md(start, VASHISHTA, [nvt(300, 3000.0)], timestep=1.0, seed=2, sample_every=100, max_displacement=m)
            for m in (None, 0.1)]
    assert slow[1].smallest_timestep_fs == 1.0
    assert slow[0].final_thermo == slow[1].final_thermo


@pytest.mark.integration
def test_the_survival_table_is_the_per_run_records(tmp_path):
    commands = vashishta_sio2_commands()
    records = survival_sweep({"vashishta": commands}, ["Si", "O"], beta_cristobalite(), tmp_path,
                           temperatures=[3000.0, 20000.0], seeds=[1, 2], steps=300, timestep=3.0,
                           aux_cutoffs=CUTOFFS, max_displacement=None, progress=None)
    hot = [r for r in records if r.temperature == 20000.0]
    cool = [r for r in records if r.temperature == 3000.0]
    assert all(r.outcome == "lost_atoms" and r.outcome_of == "integration" and not r.physical for r in hot)
    assert all(r.physical and r.outcome == "survived" for r in cool)
    assert all(min(r.min_distances.values()) > 1.1 for r in cool)
    data = write_sweep(records, tmp_path, 300)
    table = survival_table(records, 300)
    assert data["survival"] == table
    saved = json.loads((tmp_path / "survival.json").read_text())
    assert saved["survival"]["fraction_physical"] == table["fraction_physical"]
    assert [r["first_unphysical_step"] for r in saved["records"]] == [r.first_unphysical_step for r in records]
    for temperature, runs in (("3000", cool), ("20000", hot)):
        expected = [np.mean([r.first_unphysical_step is None or r.first_unphysical_step > s for r in runs])
                    for s in table["steps"]]
        assert table["fraction_physical"]["vashishta"][temperature] == pytest.approx(expected)
        expected_held = [np.mean([r.first_unheld_step is None or r.first_unheld_step > s for r in runs]) for s in table["steps"]]
        assert table["fraction_held"]["vashishta"][temperature] == pytest.approx(expected_held)
    # a run that lost its atoms stopped holding where it ended; read back, the records are the same
    assert all(r.first_unheld_step == r.steps_done < 300 for r in hot) and all(r.first_unheld_step is None for r in cool)
    assert read_sweep(tmp_path) == records
    assert table["fraction_physical"]["vashishta"]["20000"][-1] == 0.0
    assert table["fraction_physical"]["vashishta"]["3000"] == [1.0] * len(table["steps"])
    assert (tmp_path / "survival.png").stat().st_size > 10_000


@pytest.mark.integration
def test_energy_drift_and_npt_conditions_in_the_sweep(tmp_path):
    """The conserved energy's drift tells a long step from a short one; an NPT condition is its
    own survival curve, and its density moves where NVT's stays."""
    runs = {}
    for timestep in (0.5, 2.0):
        runs[timestep] = survival_sweep({"vashishta": vashishta_sio2_commands()}, ["Si", "O"], beta_cristobalite(),
                                      tmp_path / f"dt{timestep}", temperatures=[3000.0], seeds=[1], steps=400,
                                      timestep=timestep, aux_cutoffs=CUTOFFS, max_displacement=None,
                                      pressures=[None, 50000.0], progress=None)
    nvt_drift = {dt: abs(next(r for r in rs if r.pressure_bar is None).energy_drift_meV_atom_ps) for dt, rs in runs.items()}
    print(f"NVT drift of the conserved energy: {nvt_drift} meV/atom/ps")
    assert nvt_drift[2.0] > 5 * nvt_drift[0.5]
    nvt_run, npt_run = runs[0.5]
    assert nvt_run.condition == "3000 K" and npt_run.condition == "3000 K, 50000 bar"
    assert nvt_run.final_density == pytest.approx(1.0, abs=1e-9) and npt_run.final_density > 1.05
    table = survival_table(runs[0.5], 400)
    assert set(table["fraction_physical"]["vashishta"]) == {"3000", "3000 K, 50000 bar"}


@pytest.fixture(scope="module")
def energies_only(tmp_path_factory):
    """A composite and a traditional GAP from one tiny energies-only data set (the paper's
    training mode): 40 frames of a Vashishta melt-and-quench, no structure with a pair inside an
    aux cutoff, so the traditional GAP never sees the short range."""
    from conftest import SMALL_FIT

    from alcgap.config import load_fit_config
    from alcgap.workflow.fitjob import run_fit

    config = copy.deepcopy(SMALL_FIT)
    config["main"]["use_forces"] = False
    config["traditional"] = True
    return run_fit(load_fit_config(config), tmp_path_factory.mktemp("energies-only"))["models"]


@pytest.mark.integration
def test_a_plain_gap_falls_into_its_hole_where_the_composite_is_held_by_its_aux(energies_only, tmp_path):
    """The same hot runs, the package's adaptive timestep: the traditional GAP lets Si-O and Si-Si
    pairs far inside their aux cutoffs; the composite's pairs reach its aux and stop there. With
    the aux taken out, the composite is the traditional GAP (the main GAPs are fitted to the same
    targets: the aux is zero on every training structure), so these runs would fail. Measured
    (seed 1, 1000 steps): traditional Si-O 0.87 A (0.79 of its cutoff), Si-Si 1.27 A; composite
    Si-O 1.06 A, Si-Si 1.52 A (0.96, 0.95)."""
    records = survival_sweep({"composite": energies_only["composite"], "traditional": energies_only["traditional"]},
                           ["Si", "O"], beta_cristobalite(), tmp_path, temperatures=[9000.0], seeds=[1],
                           steps=STEPS, timestep=1.0, aux_cutoffs=CUTOFFS, progress=print)
    by = {name: [r for r in records if r.potential == name] for name in ("composite", "traditional")}
    deep = [r for r in by["traditional"] if r.outcome == "collapse" or min(r.cutoff_fractions.values()) < HELD]
    assert deep, [r.cutoff_fractions for r in by["traditional"]]
    assert all(not r.physical and r.first_inside_aux_step is not None and not held(r) for r in deep)
    assert all(r.first_unheld_step is not None and 0 < r.first_unheld_fs <= r.elapsed_fs for r in deep)
    for run in by["composite"]:
        assert run.outcome == "survived" and run.steps_done == STEPS, (run.outcome, run.stop_reason)
        assert min(run.cutoff_fractions.values()) >= HELD and held(run, HELD) and run.first_unheld_step is None
    # the regime the aux exists for: the composite's pairs did come inside its cutoffs
    assert any(r.first_inside_aux_step is not None for r in by["composite"])
    data = write_sweep(records, tmp_path, STEPS)
    assert [r["cutoff_fractions"] for r in data["records"]] == [r.cutoff_fractions for r in records]
