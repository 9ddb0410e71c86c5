"""`alcgap fit` is a campaign's iteration 0 plus one fit: from the same settings, the campaign's
iteration 0 makes the same dimer curves, the same auxiliary (its table, to the last digit) and
the same held-out split as the fit job did (the session's `fitted` fixture, real LAMMPS and gap_fit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alcgap.config import load_campaign_config
from alcgap.reference import make_reference
from alcgap.store import LabelStore
from alcgap.workflow.apps import InlineApps
from alcgap.workflow.context import Run
from alcgap.workflow.progress import ProgressBoard
from alcgap.workflow.stages.bootstrap import run_bootstrap
from alcgap.workflow.state import IterationState, read_frames

from conftest import SMALL_FIT


@pytest.mark.integration
def test_the_fit_job_and_a_campaigns_iteration_0_make_the_same_aux_and_split(fitted, tmp_path):
    config = load_campaign_config({**SMALL_FIT, "explore": {"temperatures": [3000], "sizes": [1, 2]},
                                   "judge": {"target_size": 2}})
    reference = make_reference(config.reference, config.species)
    run = Run(config, tmp_path, reference, LabelStore(tmp_path / "data.db"), InlineApps(),
              ProgressBoard(tmp_path, live=False), threads=config.threads)
    run_bootstrap(run, distance_table=True)

    fit_dir, campaign = Path(fitted["run_dir"]), IterationState(tmp_path, 0)
    fit_state = IterationState(fit_dir, 0)
    same = lambda stage: {k: v for k, v in stage.items() if k != "seconds"}  # noqa: E731
    assert same(campaign.get("dimers")) == same(fit_state.get("dimers"))  # every curve point, every atom energy
    assert len(campaign.get("dimers")["curves"]["Si-O"]["r"]) > 10
    # the aux: the same table to the last digit (pairs inside the cutoffs, where it is not zero)
    ours = (tmp_path / "iter-000" / "aux" / "aux.table").read_text()
    theirs = (fit_dir / "iter-000" / "aux" / "aux.table").read_text()
    assert ours.splitlines()[1:] == theirs.splitlines()[1:]  # the first line names the xml it came from
    rows = np.array([[float(x) for x in line.split()] for line in ours.splitlines() if line[:1].isdigit()])
    assert len(rows) > 300 and (rows[:, 2] > 0).sum() > 100  # energies inside the cutoffs: a real repulsive table
    assert same(campaign.get("split")) == same(fit_state.get("split"))
    assert len(campaign.get("split")["test"]) >= 2 and len(same(campaign.get("split"))["train"]) >= 10
    # and the fit trained on the split's training frames, in trajectory order
    assert [a.info["fingerprint"] for a in read_frames(fit_dir / "train.xyz")] == same(campaign.get("split"))["train"]
