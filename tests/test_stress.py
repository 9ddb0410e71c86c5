"""The stress test's parts on the real LAMMPS driver: the adaptive timestep, the failure classes,
the survival table (issue 17). The Vashishta SiO2 potential is the stiff repulsion here: at
20,000 K a 3 fs step throws atoms through its walls."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alcgap.md.forces import ForceField
from alcgap.md.lammps import run_md
from alcgap.md.protocols import nvt
from alcgap.reference import vashishta_sio2_commands
from alcgap.stress import stress_sweep, survival, write_sweep
from alcgap.structures import beta_cristobalite
from alcgap.workflow.explore import classify_md_failure

VASHISHTA = ForceField.classical(vashishta_sio2_commands(), ["Si", "O"])
CUTOFFS = {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8}


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
    records = stress_sweep({"vashishta": commands}, ["Si", "O"], beta_cristobalite(), tmp_path,
                           temperatures=[3000.0, 20000.0], seeds=[1, 2], steps=300, timestep=3.0,
                           aux_cutoffs=CUTOFFS, max_displacement=None, progress=None)
    hot = [r for r in records if r.temperature == 20000.0]
    cool = [r for r in records if r.temperature == 3000.0]
    assert all(r.outcome == "lost_atoms" and r.outcome_of == "integration" and not r.physical for r in hot)
    assert all(r.physical and r.outcome == "survived" for r in cool)
    assert all(min(r.min_distances.values()) > 1.1 for r in cool)
    data = write_sweep(records, tmp_path, 300)
    table = survival(records, 300)
    assert data["survival"] == table
    saved = json.loads((tmp_path / "stress.json").read_text())
    assert saved["survival"]["fraction_physical"] == table["fraction_physical"]
    assert [r["first_unphysical_step"] for r in saved["records"]] == [r.first_unphysical_step for r in records]
    for temperature, runs in (("3000", cool), ("20000", hot)):
        expected = [np.mean([r.first_unphysical_step is None or r.first_unphysical_step > s for r in runs])
                    for s in table["steps"]]
        assert table["fraction_physical"]["vashishta"][temperature] == pytest.approx(expected)
    assert table["fraction_physical"]["vashishta"]["20000"][-1] == 0.0
    assert table["fraction_physical"]["vashishta"]["3000"] == [1.0] * len(table["steps"])
    assert (tmp_path / "survival.png").stat().st_size > 10_000


@pytest.mark.integration
def test_energy_drift_and_npt_conditions_in_the_sweep(tmp_path):
    """The conserved energy's drift tells a long step from a short one; an NPT condition is its
    own survival curve, and its density moves where NVT's stays."""
    runs = {}
    for timestep in (0.5, 2.0):
        runs[timestep] = stress_sweep({"vashishta": vashishta_sio2_commands()}, ["Si", "O"], beta_cristobalite(),
                                      tmp_path / f"dt{timestep}", temperatures=[3000.0], seeds=[1], steps=400,
                                      timestep=timestep, aux_cutoffs=CUTOFFS, max_displacement=None,
                                      pressures=[None, 50000.0], progress=None)
    nvt_drift = {dt: abs(next(r for r in rs if r.pressure_bar is None).energy_drift_meV_atom_ps) for dt, rs in runs.items()}
    print(f"NVT drift of the conserved energy: {nvt_drift} meV/atom/ps")
    assert nvt_drift[2.0] > 5 * nvt_drift[0.5]
    nvt_run, npt_run = runs[0.5]
    assert nvt_run.condition == "3000 K" and npt_run.condition == "3000 K, 50000 bar"
    assert nvt_run.final_density == pytest.approx(1.0, abs=1e-9) and npt_run.final_density > 1.05
    table = survival(runs[0.5], 400)
    assert set(table["fraction_physical"]["vashishta"]) == {"3000", "3000 K, 50000 bar"}
