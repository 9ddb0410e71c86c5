"""The pieces that make the loop learn: one distance table, a per-frame verdict, a calibrated
variance flag, a fixed block split, explicit exploration state and the stop rule. Real LAMMPS
(Vashishta SiO2) MD and a real fitted composite GAP; no mocks."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase import units

from alcgap.config import ConfigError, load_campaign_config
from alcgap.explore.distances import DistanceTable, base_criteria, clustering_criteria
from alcgap.md.classical import run_classical_md
from alcgap.md.forces import ForceField
from alcgap.md.lammps import run_md
from alcgap.md.monitors import Monitor, MonitorSettings
from alcgap.md.protocols import exploration_protocol, melt_and_quench, nve, scaled_cell
from alcgap.reference import vashishta_sio2_commands
from alcgap.structures import beta_cristobalite
from alcgap.workflow.stages.explore_plan import Exploration, ExploreTask, md_summary, quotas
from alcgap.bootstrap import split
from alcgap.workflow.stages.stop import Judgement, decide

from conftest import GATES_PASS

SPECIES = ["Si", "O"]


@pytest.fixture(scope="module")
def bootstrap():
    """A short classical melt of the 24-atom cell: the frames a campaign's table comes from."""
    return run_classical_md(beta_cristobalite(), vashishta_sio2_commands(), SPECIES, melt_and_quench(0.012, 4000.0),
                            sample_every=100, seed=2)


@pytest.fixture(scope="module")
def table(bootstrap):
    return DistanceTable.from_data(bootstrap, SPECIES, shells=base_criteria(SPECIES).neighbour_cutoff)


def monitor_settings(table, every=10, variance_threshold=None):
    return MonitorSettings(every=every, min_distance=table.named("flag"), variance_threshold=variance_threshold,
                           clustering=clustering_criteria(SPECIES, table).model_dump(),
                           collapse_fraction=table.collapse_fraction)


def test_one_table_orders_flag_clustered_collapse(table, bootstrap):
    from alcgap.explore.distances import shortest_in_frames

    seen = shortest_in_frames(bootstrap)
    for pair, flag in table.flag.items():
        assert flag == pytest.approx(0.95 * seen[pair], abs=1e-4)
        assert table.collapse[pair] < table.clustered[pair] < flag
    # any species set works without hand-written tables: a pair absent from the data falls back
    generic = DistanceTable.from_data(bootstrap, ["Si", "O", "Ge"])
    assert "covalent" in generic.source["Ge-Ge"] and generic.flag[("Ge", "Si")] > 1.0
    assert DistanceTable.from_dict(table.as_dict()) == table


def test_the_reference_melt_is_clean_and_reaches_its_temperature(table, tmp_path):
    """The verdict must not hold the reference's own physics against a run: 240 atoms at 4000 K."""
    task = ExploreTask(1, 3, 4000.0, 10)
    result = run_md(scaled_cell(beta_cristobalite(), 10), ForceField.classical(vashishta_sio2_commands(), SPECIES),
                    exploration_protocol(600, 4000.0), sample_every=50, seed=3, monitor=monitor_settings(table),
                    output_dir=tmp_path)
    assert result.n_monitored == 61 and result.n_clustered == 0
    summary = md_summary(tmp_path, task)
    assert summary["verdict"] == "clean" and summary["first_bad_step"] is None
    # a "4000 K" run holds 4000 K: the old 120-step heating under 100-step damping peaked at 2512 K
    assert summary["temperature"]["ratio"] > 0.9, summary["temperature"]


def test_a_run_that_clusters_mid_way_and_recovers_is_clustered_at_that_step(table, tmp_path):
    """Two O atoms shot at each other in a cold crystal: they come inside the clustered O-O
    distance after some steps and bounce apart, so the last frame is clean."""
    atoms = beta_cristobalite().repeat(2)
    o = [k for k, s in enumerate(atoms.get_chemical_symbols()) if s == "O"]
    a = o[0]
    d = atoms.get_distances(a, o[1:], mic=True)
    b = o[1:][int(np.argmin(d))]
    unit = atoms.get_distance(a, b, mic=True, vector=True) / atoms.get_distance(a, b, mic=True)
    velocities = np.zeros((len(atoms), 3))
    speed = 0.25  # A/fs: about 5 eV of kinetic energy per O atom (seen: O-O down to 1.42 A at step 6)
    velocities[a] = speed * unit * units.Angstrom / units.fs
    velocities[b] = -speed * unit * units.Angstrom / units.fs
    atoms.set_velocities(velocities)
    result = run_md(atoms, ForceField.classical(vashishta_sio2_commands(), SPECIES), [nve(400)], timestep=0.5,
                    sample_every=50, monitor=monitor_settings(table, every=2), output_dir=tmp_path, velocities=True)
    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    assert result.first_clustered_step is not None and result.first_clustered_step > 0, result.min_distances
    assert lines[-1]["clustered"] is None, "the pair should have bounced apart by the last frame"
    summary = md_summary(tmp_path, ExploreTask(1, 1, 300.0, 1))
    assert summary["verdict"] == "clustered" and summary["first_bad_step"] == result.first_clustered_step
    clustered_line = next(line for line in lines if line["clustered"])
    assert clustered_line["step"] == result.first_clustered_step and any("clustered" in f for f in clustered_line["flags"])


def test_every_clustered_frame_is_flagged_with_its_atoms(table):
    """Flags and verdict agree: a clustered contact is always a flagged one, atom by atom."""
    atoms = scaled_cell(beta_cristobalite(), 10)
    si = atoms.get_chemical_symbols().index("Si")
    o = int(np.argmin([atoms.get_distance(si, k, mic=True) if s == "O" else 9 for k, s in enumerate(atoms.get_chemical_symbols())]))
    vector = atoms.get_distance(si, o, mic=True, vector=True)
    atoms.positions[o] = atoms.positions[si] + 0.9 * table.clustered[("Si", "O")] * vector / np.linalg.norm(vector)
    verdict = Monitor(monitor_settings(table)).check(atoms, 0)
    assert verdict.clustered and any(r.startswith("short pair Si-O") for r in verdict.flag_reasons)
    flagged = set(np.flatnonzero(verdict.short_pair_ratio < 1))
    # the pushed O and its Si, and the O atoms of that Si's tetrahedron it now crowds: nothing far away
    assert {si, o} <= flagged and flagged <= _neighbours(atoms, o, 2.5)


def test_a_model_does_not_flag_the_crystal_it_was_trained_on(fitted):
    """Calibrated threshold: 2 x the 99th percentile of held-out atoms; the crystal start (24 and
    240 atoms) stays below it, a planted local distortion does not."""
    from alcgap.analysis.uncertainty import calibrate_variance
    from alcgap.calculator import GapCalculator

    run_dir = fitted["run_dir"]
    calc = GapCalculator(fitted["models"]["composite"], variance=True)
    calibration = calibrate_variance(calc, ase.io.read(f"{run_dir}/test.xyz", ":"))
    for size in (1, 10):
        crystal = scaled_cell(beta_cristobalite(), size)
        crystal.calc = calc
        assert calc.get_variance(crystal).max() < calibration["threshold"] / 2, (size, calibration)
    distorted = scaled_cell(beta_cristobalite(), 10)
    distorted.positions[5] += [0.45, 0.3, -0.2]
    distorted.calc = calc
    variance = calc.get_variance(distorted)
    assert int(np.argmax(variance)) in _neighbours(distorted, 5, 2.0) and variance.max() > calibration["threshold"]


def _neighbours(atoms, index, radius):
    d = atoms.get_distances(index, range(len(atoms)), mic=True)
    return set(np.flatnonzero(d < radius))


def test_the_held_out_set_is_contiguous_blocks(bootstrap):
    frames = list(range(40))
    train, test = split(frames, 0.25, seed=1)
    assert (train, test) == split(frames, 0.25, seed=1) and not set(train) & set(test)
    # 10 blocks of 4 frames; round(0.25 x 10) = 2 of them, not adjacent
    blocks = np.split(np.array(test), np.flatnonzero(np.diff(test) != 1) + 1)
    assert len(test) == 8 and len(blocks) == 2 and all(len(b) == 4 for b in blocks)
    with pytest.raises(ValueError, match="test_fraction"):
        split(list(range(3)), 0.9, seed=1)


def test_budget_shares_do_not_depend_on_finishing_order(tmp_path):
    tasks = [ExploreTask(1, s, 4000.0, 10) for s in (1, 2, 3)]
    assert quotas(tasks, 8) == {"s1-T4000-x10": 3, "s2-T4000-x10": 3, "s3-T4000-x10": 2}
    assert sum(quotas(tasks, 2).values()) == 2
    plan = Exploration.load(tmp_path / "exploration.json", tasks, 8)
    plan.record_pick("s2-T4000-x10", {"path": "b.xyz", "n_chosen": 3})
    plan.record_pick("s1-T4000-x10", {"path": "a.xyz", "n_chosen": 1})
    again = Exploration.load(tmp_path / "exploration.json", tasks, 8)
    assert again.left() == 4 and again.pick_paths() == ["a.xyz", "b.xyz"]
    with pytest.raises(ValueError, match="select.budget"):
        Exploration.load(tmp_path / "exploration.json", tasks, 9)


QUICK = {"species": ["Si", "O"], "reference": {"kind": "lammps"}, "explore": {"sizes": [1, 2]}}


def test_a_config_without_a_run_at_the_target_size_is_refused():
    with pytest.raises(ConfigError, match=r"judge.target_size.*explore.sizes"):
        load_campaign_config(QUICK)
    config = load_campaign_config({**QUICK, "judge": {"target_size": 2}})
    with pytest.raises(ConfigError, match="distances.flag"):
        load_campaign_config({**QUICK, "judge": {"target_size": 2, "clustering": {"min_distance": {"Si-O": 1.0}}}})
    assert config.judge.target_size == 2


def test_the_stop_rule_judges_the_target_size_and_names_the_gate():
    config = load_campaign_config({**QUICK, "judge": {"target_size": 2, "force_tolerance": 1.0}})
    sizes = {"a-x1": 1, "a-x2": 2}
    clean = Judgement(1, 5.0, 0.5, {"a-x1": "clustered", "a-x2": "clean"}, sizes, target_size=2, n_new_labels=3,
                      **GATES_PASS)
    decision = decide(clean, config)
    assert decision.rule == "converged" and "not the paper's 10x" in decision.why
    dirty = Judgement(1, 5.0, 0.5, {"a-x1": "clean", "a-x2": "clustered"}, sizes, target_size=2, n_new_labels=3,
                      **GATES_PASS)
    assert decide(dirty, config).rule == "continue"
    # a gate fails and nothing new could be labelled: stop, naming the gate, its figure and a setting
    spinning = Judgement(1, 5.0, 1.348, {"a-x1": "clean", "a-x2": "clean"}, sizes, target_size=2, n_new_labels=0,
                         **GATES_PASS)
    decision = decide(spinning, config)
    assert decision.rule == "nothing_to_learn"
    assert "held-out force RMSE 1.348" in decision.why and "tolerance 1.000" in decision.why
    assert "explore.temperatures" in decision.why


def test_frames_far_from_equilibrium_are_fitted_more_loosely():
    """Per-frame sigmas scale with the RMS force above main.sigma_force_scale (gap_fit reads
    them: seen, a fit with energy_sigma = force_sigma = 100 on every frame predicts another energy)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from alcgap.fit.main import training_frames

    calm, wild = beta_cristobalite(), beta_cristobalite()
    calm.calc = SinglePointCalculator(calm, energy=-200.0, forces=np.full((24, 3), 1.0))
    wild.calc = SinglePointCalculator(wild, energy=-150.0, forces=np.full((24, 3), 12.0))
    frames = training_frames([calm, wild], use_forces=True, use_virials=False, sigmas=(0.002, 0.1, 0.1), force_scale=3.0)
    assert "force_sigma" not in frames[0].info
    assert frames[1].info["force_sigma"] == pytest.approx(0.4)  # 0.1 x 12 / 3
    assert frames[1].info["energy_sigma"] == pytest.approx(0.002 * 4 * np.sqrt(24))  # absolute, like gap_fit's per-atom default


def test_the_stop_rule_gates_on_the_held_out_stress_when_asked():
    sizes, clean = {"a-x1": 1, "a-x2": 2}, {"a-x1": "clean", "a-x2": "clean"}
    ungated = load_campaign_config({**QUICK, "judge": {"target_size": 2}})
    assert ungated.judge.max_stress_rmse is None and ungated.main.use_virials is None
    # no gate: a stress error, or none at all, does not hold a campaign back
    for stress in (25.0, float("nan")):
        assert decide(Judgement(1, 5.0, 0.5, clean, sizes, target_size=2, n_new_labels=3, stress_rmse=stress, **GATES_PASS), ungated).rule == "converged"
    config = load_campaign_config({**QUICK, "judge": {"target_size": 2, "max_stress_rmse": 1.0}})
    passed = decide(Judgement(1, 5.0, 0.5, clean, sizes, target_size=2, n_new_labels=3, stress_rmse=0.8, **GATES_PASS), config)
    assert passed.rule == "converged" and "stress RMSE 0.80 (gate 1.0) GPa" in passed.why
    failed = decide(Judgement(1, 5.0, 0.5, clean, sizes, target_size=2, n_new_labels=3, stress_rmse=1.49, **GATES_PASS), config)
    assert failed.rule == "continue" and "stress RMSE 1.49 > judge.max_stress_rmse 1.0 GPa" in failed.why
    unmeasured = decide(Judgement(1, 5.0, 0.5, clean, sizes, target_size=2, n_new_labels=0, **GATES_PASS), config)
    assert unmeasured.rule == "nothing_to_learn" and "no held-out frame carries a stress" in unmeasured.why
    off = load_campaign_config({**QUICK, "judge": {"target_size": 2, "max_stress_rmse": 1.0}, "main": {"use_virials": False}})
    assert "main.use_virials is false" in decide(Judgement(1, 5.0, 0.5, clean, sizes, target_size=2, n_new_labels=3,
                                                           stress_rmse=3.1, **GATES_PASS), off).why
    with pytest.raises(ConfigError, match="max_stress_rmse"):
        load_campaign_config({**QUICK, "judge": {"target_size": 2, "max_stress_rmse": -1.0}})


@pytest.mark.parametrize(
    "result, failure",
    [
        ({"stopped_early": True, "stop_reason": "step 450: collapse: 3 pairs (4 atoms) closer than 0.6 x their minimum"},
         ("collapse", "potential", "clustered")),
        ({"stopped_early": True, "stop_reason": "LAMMPS error in steps 280-290: Lost atoms: original 240 current 238"},
         ("lost_atoms", "integration", "failed")),
        ({"stopped_early": True, "stop_reason": "step 70: non-finite energy or forces (energy nan)"},
         ("non_finite", "integration", "clustered")),
        ({"stopped_early": True, "stop_reason": "LAMMPS error in steps 10-20: Pair distance < table inner cutoff: 1 2 0.49"},
         ("pair_inside_aux_table", "potential", "failed")),
        ({"failed": True, "error": "Traceback (most recent call last):\n  ...\nRuntimeError: QUIP: descriptor failed"},
         ("task_error", "software", "failed")),
        (None, ("interrupted", "none", "failed")),
    ],
    ids=["collapse", "lost-atoms", "blow-up", "aux-table", "quip-error", "killed"],
)
def test_an_md_failure_is_classified_by_whose_it_is(tmp_path, result, failure):
    """Integration failures (a step too long for the forces) apart from the potential's (atoms let
    too close); a task that left no result (killed, node lost) is nobody's. A run the package's
    monitors stopped is a result ("clustered"); one LAMMPS or the task ended is "failed", and a
    resume runs it again."""
    if result is not None:
        result = {"steps_done": 300, "steps_requested": 450, "n_atoms": 240, **result}
        (tmp_path / "result.json").write_text(json.dumps(result))
    summary = md_summary(tmp_path, ExploreTask(1, 1001, 4000.0, 10))
    assert (summary["failure"], summary["failure_of"], summary["verdict"]) == failure
