"""The variance as a predicted force error (alcgap.analysis.calibration), on the Vashishta stand-in
with real gap_fit, quippy and LAMMPS: the band calibrated on held-out labels holds for its stated
share of atoms the calibration never saw; and a model fitted to a crystal, run hot, stays free of
clustering yet is refused "converged" by the confidence gate, which says by how much."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alcgap.analysis.calibration import (ErrorModel, coverage, fit_error_model, force_rmse_with_error,
                                        variance_and_errors)
from alcgap.calculator import GapCalculator
from alcgap.config import load_campaign_config
from alcgap.explore.distances import DistanceTable, base_criteria, clustering_criteria
from alcgap.fit.main import fit_main_gap
from alcgap.fit.settings import MainSettings
from alcgap.md.classical import run_classical_md
from alcgap.md.forces import ForceField
from alcgap.md.lammps import run_md
from alcgap.md.monitors import MonitorSettings
from alcgap.md.protocols import melt_and_quench, nvt, scaled_cell
from alcgap.reference import vashishta_sio2_commands
from alcgap.structures import beta_cristobalite
from alcgap.workflow.state import read_frames
from alcgap.workflow.stages.stop import Judgement, decide

from conftest import GATES_PASS

SPECIES = ["Si", "O"]
#: the calibration's stated accuracy: the share of unseen atoms inside the band is the stated
#: level within this (240 atoms of 10 frames: the binomial spread alone is 0.02-0.03)
COVERAGE_TOLERANCE = 0.08


def _labelled(frames, reference):
    return [label.attach(frame.copy()) for frame, label in zip(frames, reference.label(frames))]


def test_the_error_model_recovers_a_known_law_and_inverts_at_the_tolerance(rng):
    """Synthetic: errors drawn with s^2 = 4 v + 0.1^2 are fitted back, and the band holds its share."""
    v = rng.uniform(0.0, 0.05, 4000)
    errors = rng.normal(size=(4000, 3)) * np.sqrt(4.0 * v + 0.01)[:, None]
    model = fit_error_model(v, errors)
    assert model.alpha == pytest.approx(4.0, rel=0.1) and model.beta == pytest.approx(0.1, rel=0.15)
    for level in (0.5, 0.9):
        assert coverage(model, v, errors, level)["inside"] == pytest.approx(level, abs=0.02)
    assert model.sigma(model.variance_at(0.3)) == pytest.approx(0.3)
    assert ErrorModel(4.0, 0.5, 1).variance_at(0.3) == 0.0  # the floor is over the tolerance: every atom flagged


@pytest.mark.integration
def test_the_calibrated_band_holds_for_its_share_of_unseen_atoms(fitted, vashishta):
    """Calibrated on the fit's held-out bootstrap atoms, checked on a fresh Vashishta melt at
    another temperature and seed, which neither the fit nor the calibration saw."""
    calc = GapCalculator(fitted["models"]["composite"], variance=True)
    held_out = read_frames(fitted["run_dir"] + "/test.xyz")
    model = fit_error_model(*variance_and_errors(calc, held_out))
    assert model.alpha > 0.0 and model.n_atoms == 24 * len(held_out) >= 144

    fresh = run_classical_md(beta_cristobalite(), vashishta_sio2_commands(), SPECIES, melt_and_quench(0.01, 3500.0),
                             sample_every=150, seed=11)[-10:]
    unseen = variance_and_errors(calc, _labelled(fresh, vashishta))
    assert len(unseen[0]) == 240
    for level in (0.5, 0.9):
        inside = coverage(model, *unseen, level)["inside"]
        assert abs(inside - level) <= COVERAGE_TOLERANCE, f"{inside:.3f} of unseen atoms inside the {level:.0%} band"
    # the variance carries the information: atoms the model is least sure of err more
    order = np.argsort(unseen[0])
    norms = np.linalg.norm(unseen[1], axis=1)[order]
    assert norms[-60:].mean() > norms[:60].mean()


@pytest.mark.integration
def test_a_crystal_model_run_hot_is_clean_yet_the_confidence_gate_refuses_it(tmp_path, vashishta):
    crystal = run_classical_md(beta_cristobalite(), vashishta_sio2_commands(), SPECIES, [nvt(1600, 300.0)],
                               sample_every=100, seed=4)
    labelled = _labelled(crystal, vashishta)
    train, held = labelled[:12], labelled[12:]
    xml = fit_main_gap(train, MainSettings(soap={"n_sparse": 80}), {"Si": 0.0, "O": 0.0}, tmp_path / "fit",
                       name="crystal.xml", seed=2)
    calc = GapCalculator(xml, variance=True)
    model = fit_error_model(*variance_and_errors(calc, held))
    # a tolerance the model meets on its own material: twice its held-out error on the crystal
    tolerance = 2.0 * force_rmse_with_error(calc, held)["rmse"]
    threshold = model.variance_at(tolerance)
    assert threshold > 0.0

    # hot, in a 2x cell: the crystal model has never seen a 2000 K solid
    table = DistanceTable.from_data(crystal, SPECIES, shells=base_criteria(SPECIES).neighbour_cutoff)
    monitor = MonitorSettings(every=20, min_distance=table.named("flag"), variance_threshold=threshold,
                              clustering=clustering_criteria(SPECIES, table).model_dump(),
                              collapse_fraction=table.collapse_fraction)
    result = run_md(scaled_cell(beta_cristobalite(), 2), ForceField.gap(xml, SPECIES), [nvt(600, 2000.0)], seed=3,
                    monitor=monitor, output_dir=tmp_path / "hot")
    assert not result.stopped_early and result.first_clustered_step is None, result.first_clustered
    lines = [json.loads(line) for line in (tmp_path / "hot" / "monitor.jsonl").read_text().splitlines()]
    confident = sum(line["max_variance"] <= threshold for line in lines) / len(lines)
    assert len(lines) == result.n_monitored >= 30 and confident < 0.9
    # and it is right not to be sure: on frames of that run, labelled, the model errs beyond the tolerance
    visited = _labelled(read_frames(tmp_path / "hot" / "trajectory.xyz")[-3:], vashishta)
    assert force_rmse_with_error(calc, visited)["rmse"] > tolerance

    config = load_campaign_config({"explore": {"sizes": [1, 2]}, "judge": {"target_size": 2, "force_tolerance": tolerance}})
    judgement = Judgement(1, 5.0, 0.1, {"a-x2": "clean"}, {"a-x2": 2}, target_size=2, n_new_labels=3,
                          **{**GATES_PASS, "tolerance": tolerance, "confident_fraction": confident,
                             "n_target_frames": len(lines)})
    decision = decide(judgement, config)
    assert decision.rule == "continue" and "clean:" not in decision.why.split("confidence:")[0]
    assert f"confidence: {confident:.0%} of {len(lines)} 2x" in decision.why
    assert f"short by {0.9 - confident:.0%}" in decision.why
    # the same run judged on the clean gate alone, the paper's rule, would have converged
    clean_only = load_campaign_config({"explore": {"sizes": [1, 2]},
                                       "judge": {"target_size": 2, "force_tolerance": tolerance, "gates": ["clean"]}})
    assert decide(judgement, clean_only).rule == "converged"
