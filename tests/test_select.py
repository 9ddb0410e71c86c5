"""Selection (flags -> SOAP de-duplication -> budget) and the stopping rule."""

from __future__ import annotations

import math

import pytest

from alcgap.config import ConfigError, load_campaign_config
from alcgap.select import SelectionSettings, select_frames
from alcgap.structures import beta_cristobalite, rattled
from alcgap.workflow.stop import Judgement, decide


def flagged(atoms, variance=0.0, short=None):
    atoms.info["max_variance"] = variance
    if short is not None:
        atoms.info["min_distance"] = short
        atoms.info["flag_reasons"] = f"short pair Si-O {short:.2f} A"
    else:
        atoms.info["flag_reasons"] = f"variance {variance:.3g}"
    return atoms


def test_duplicates_removed_and_budget_respected():
    base = beta_cristobalite()
    distinct = [flagged(rattled(base, 0.15, seed), variance=0.1 + seed) for seed in range(4)]
    # near-copies of the first frame: the same configuration seen on consecutive MD steps
    copies = [flagged(rattled(distinct[0], 1e-5, 100 + k), variance=0.05) for k in range(3)]
    chosen = select_frames(distinct + copies, ["Si", "O"], SelectionSettings(budget=10, min_distance=1e-5))
    assert chosen.n_duplicates == 3
    assert len(chosen.chosen) == 4
    tight = select_frames(distinct + copies, ["Si", "O"], SelectionSettings(budget=2, min_distance=1e-5))
    assert [a.info["max_variance"] for a in tight.chosen] == [3.1, 2.1]  # the most uncertain first
    assert tight.n_over_budget + tight.n_duplicates == 5


def test_short_pairs_first_then_variance():
    base = beta_cristobalite()
    frames = [flagged(rattled(base, 0.15, 1), variance=5.0), flagged(rattled(base, 0.15, 2), variance=0.5, short=1.0),
              flagged(rattled(base, 0.15, 3), variance=9.0)]
    chosen = select_frames(frames, ["Si", "O"], SelectionSettings(budget=2, min_distance=1e-5)).chosen
    assert chosen[0].info["min_distance"] == 1.0
    assert chosen[1].info["max_variance"] == 9.0


def test_frames_already_in_training_set_not_selected_again():
    base = rattled(beta_cristobalite(), 0.1, 7)
    again = flagged(base.copy(), variance=1.0)
    new = flagged(rattled(base, 0.2, 8), variance=0.5)
    chosen = select_frames([again, new], ["Si", "O"], SelectionSettings(budget=5, min_distance=1e-5), known=[base]).chosen
    assert len(chosen) == 1 and chosen[0].info["max_variance"] == 0.5


@pytest.fixture(scope="module")
def config():
    return load_campaign_config({"explore": {"sizes": [1, 10]}, "judge": {"max_energy_mae": 10.0, "max_force_rmse": 0.5},
                                 "stop": {"max_iterations": 4, "max_labels": 100}})


def judgement(iteration=1, mae=5.0, rmse=0.3, verdicts=None, n_labels=10, n_selected=3):
    verdicts = verdicts or {"a-x1": "clean", "a-x10": "clean", "b-x10": "clean"}
    sizes = {k: int(k.split("-x")[1]) for k in verdicts}
    return Judgement(iteration, mae, rmse, verdicts, sizes, n_labels=n_labels, n_selected=n_selected)


def test_stop_rules(config):
    assert decide(judgement(), config).rule == "converged"
    # a clustered run at the training size does not block convergence; one at 10x does
    assert decide(judgement(verdicts={"a-x1": "clustered", "a-x10": "clean"}), config).rule == "converged"
    dirty = decide(judgement(verdicts={"a-x1": "clean", "a-x10": "clustered"}), config)
    assert not dirty.stop and "a-x10" in dirty.why
    assert not decide(judgement(mae=12.0), config).stop
    assert decide(judgement(mae=12.0, iteration=4), config).rule == "max_iterations"
    assert decide(judgement(rmse=0.9, n_labels=100), config).rule == "max_labels"
    assert decide(judgement(rmse=math.nan), config).rule == "converged"  # energies-only labels
    assert decide(judgement(verdicts={"a-x10": "clustered"}, n_selected=0), config).rule == "nothing_selected"


def test_campaign_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="explore.sizes"):
        load_campaign_config({"explore": {"sizes": [0]}})
    with pytest.raises(ConfigError, match="explore.min_distances"):
        load_campaign_config({"explore": {"min_distances": {"Si-Si": 2.0}}})
    with pytest.raises(ConfigError, match="select.budget"):
        load_campaign_config({"select": {"budget": 0}})
    with pytest.raises(ConfigError, match="unknown key"):
        load_campaign_config({"explore": {"seed": [1]}})
