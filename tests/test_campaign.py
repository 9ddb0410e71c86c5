"""The active-learning campaign end to end on a real local Parsl executor, with the real
Vashishta reference standing in for DFT: stopping rule, kill + resume, custom selection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml

from alcgap.config import load_campaign_config
from alcgap.reference import LammpsReference
from alcgap.store import LabelStore
from alcgap.workflow.campaign import resume_campaign, run_campaign
from alcgap.workflow.freeze import ResumeRefused
from alcgap.workflow.lock import stale_processes

# The classical twin of the demo (configs/sio2-quick.yaml): 24-atom SiO2 with a deliberately thin
# bootstrap (one short melt, 18 frames), so the first model is not good enough at 4000 K and the
# loop must repair it. The suite judges 2x cells (48 atoms), said explicitly by judge.target_size;
# the demo and benchmarks/campaign_learning.py judge the paper's 10x.
DEMO = yaml.safe_load((Path(__file__).parents[1] / "configs" / "sio2-quick.yaml").read_text())
QUICK = {
    **DEMO,
    "name": "test",
    "seed": 5,
    "threads": 1,
    "reference": {"kind": "lammps"},
    "main": {**DEMO["main"], "soap": {**DEMO["main"]["soap"], "n_sparse": 100}},
    # 600-step runs, as measured for this twin (docs: issue 14 note); the demo runs 450
    # the former flag threshold (2 x the 99th percentile of the held-out variance): the learning
    # asserted below is that campaign's, 2 iterations; the tolerance flag is tests/test_calibration.py's
    "explore": {**DEMO["explore"], "sizes": [1, 2], "seeds": [1], "protocol_scale": 0.004,
                "variance_threshold": "percentile"},
    "select": {"budget": 6},
    # the paper's gate alone: the suite's budget holds one campaign of 2 iterations (the three
    # gates' tests are tests/test_calibration.py and the stop rule's; their campaigns are
    # benchmarks/campaign_learning.py's); every new figure is still measured, logged and drawn
    "judge": {**DEMO["judge"], "target_size": 2, "max_energy_mae": 40.0, "force_tolerance": 1.0, "gates": ["clean"]},
    "stop": {"max_iterations": 4},
}


def no_duplicate_labels(store: LabelStore) -> None:
    keys = Counter((row.fingerprint, row.settings_hash) for row in store.rows(status=None))
    repeated = [key for key, n in keys.items() if n > 1]
    assert not repeated, f"structures labelled twice: {repeated[:3]}"


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("campaign")
    return run_dir, run_campaign(load_campaign_config(QUICK), run_dir)


def test_campaign_learns_and_stops_on_the_target_size(campaign):
    run_dir, summary = campaign
    metrics = summary["metrics"]
    assert summary["stopped_by"] == "converged", summary["why"]
    assert summary["target_size"] == 2 and summary["target_is_10x"] is False
    assert len(metrics) >= 2, "the thin bootstrap should not be good enough for the first model"
    first, last = metrics[0], metrics[-1]
    # what failed in iteration 1 was repaired: its target runs were not clean, the last ones are
    assert any(first["clustering"][t] != "clean" for t, size in first["sizes"].items() if size == 2)
    assert all(last["clustering"][t] == "clean" for t, size in last["sizes"].items() if size == 2)
    # the second model knows more: fewer flagged atoms per monitored atom, lower error on the
    # frames it chose (labelled after its fit: the prospective error), and on those same frames,
    # at the atoms where exploration put them (not the carve's relaxed boundary), lower than the
    # first model's: the like-for-like measure of what the refit learned
    flagged = [sum(m["flagged_atom_fraction"].values()) for m in metrics[:2]]
    assert flagged[1] < flagged[0], flagged
    prospective = [m["prospective_errors"]["force_rmse"] for m in metrics[:2]]
    assert prospective[1] < prospective[0], prospective
    second = metrics[1]["prospective_errors"]
    assert second["n_core"] > 0
    assert second["core_force_rmse"] < second["previous_model"]["core_force_rmse"], second
    for m in metrics[:-1]:
        assert m["new_labels"] > 0  # every iteration but the converged one learned something
    # the held-out set is fixed once and no selected label is ever in it
    state = json.loads((run_dir / "iter-000" / "state.json").read_text())["stages"]
    test_keys = set(state["split"]["test"])
    store = LabelStore(run_dir / "data.db")
    explored = [row for row in store.rows() if row.origin.startswith("explore:")]
    assert explored and not {row.fingerprint for row in explored} & test_keys
    assert all(m["n_test"] == len(test_keys) for m in metrics)
    for k in range(1, len(metrics) + 1):
        train = ase.io.read(run_dir / f"iter-{k:03d}" / "train.xyz", ":")
        assert not {a.info["fingerprint"] for a in train} & test_keys
    # every selected label says which atoms it was chosen for; a 48-atom frame is carved around
    # one atom where a radius-4 A cell fits, else labelled whole, saying why
    assert all(row.data["details"]["centre_atoms"] for row in explored)
    for row in explored:
        details = row.data["details"]
        if "carve_centres" in details:
            assert row.natoms < 48 and details["carved_from_natoms"] == 48
            # its cut boundary was relaxed by the model that explored (or why not is recorded)
            assert details["carve_relax"] in ("relaxed", "nothing to relax") or \
                details["carve_relax"].startswith(("stopped: ", "rejected: "))
        else:
            assert row.natoms == 24 or "carve_failed" in details
    assert all(row.get("variance") is not None or row.get("min_distance") is not None for row in explored)
    no_duplicate_labels(store)


def test_status_and_report_of_a_finished_campaign(campaign, capsys):
    from alcgap.cli import _status, main

    run_dir, _ = campaign
    assert main(["status", str(run_dir)]) == 0
    capsys.readouterr()
    assert _status(run_dir, width=80) == 0
    shown = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in shown) <= 80, shown
    rows = [line for line in shown if line.startswith("│") and line.split("│")[1].strip().isdigit()]
    assert len(rows) == len(list(run_dir.glob("iter-[0-9][0-9][0-9]")))  # one line per iteration: nothing wraps
    assert main(["report", str(run_dir)]) == 0
    page = run_dir / "report" / "index.html"
    assert page.exists() and "data:image/png;base64" in page.read_text()
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["problems"] == []
    campaign = report["campaign"]
    assert campaign["status"]["state"] == "finished" and campaign["status"]["stopped_by"] == "converged"
    # the aux against its reference points: zero from the cutoff on, repulsive and monotone below
    assert set(campaign["aux_curves"]) == {"Si-Si", "Si-O", "O-O"}
    for name, curve in campaign["aux_curves"].items():
        r, e = np.array(curve["aux_r"]), np.array(curve["aux_eV"])
        assert np.all(e[r >= curve["cutoff"]] == 0.0) and np.all(np.diff(e[r < curve["cutoff"]]) <= 0.0), name
        assert min(curve["target_r"]) < min(curve["reference_r"])  # the core continuation below the scan
    # every exploration run over time, with what the judge said; the selected labels and why
    series = campaign["series"]
    assert set(series) == {str(m["iteration"]) for m in summary_metrics(run_dir)}
    first = series["1"]
    assert first["variance_threshold"] > 0 and first["flag_distances"]
    for task, run in first["runs"].items():
        assert run["steps"][0] == 0 and run["steps"][-1] == 600 and len(run["temperature"]) == len(run["steps"])
        assert run["verdict"] == summary_metrics(run_dir)[0]["clustering"][task]
    explored = [row for row in LabelStore(run_dir / "data.db").rows(status=None) if row.origin.startswith("explore:")]
    assert len(campaign["labels"]) == len(explored) and {r["why"] for r in campaign["labels"]} <= {"short pair", "variance", "informative (fallback)"}
    # what each clustered run's cluster looked like, and what it was made of
    clustered = {(str(m["iteration"]), t) for m in summary_metrics(run_dir) for t, v in m["clustering"].items()
                 if v == "clustered" and m["runs"][t].get("first_bad_step") is not None}
    pictured = {(str(c["iteration"]), c["run"]) for c in campaign["clusters"]}
    assert pictured <= clustered and (not clustered or pictured)
    for cluster in campaign["clusters"]:
        assert cluster["formulas"] and Path(cluster["picture"]).stat().st_size > 1000
    assert "iteration 1: exploration runs over time" in report["plots"]
    # per iteration, under its own headings: the held-out parity and the variance calibration the
    # campaign plotted, with the numbers behind them; the RDF of each exploration run against the
    # reference, with its distance
    text = page.read_text()
    from alcgap.analysis.rdf import partial_rdfs, rdf_distance

    reference = ase.io.read(run_dir / "iter-000" / "bootstrap.xyz", ":")
    by_iteration = {r["iteration"]: r for r in report["iterations"]}
    labels = [row for row in LabelStore(run_dir / "data.db").rows() if row.origin.startswith("explore:")]
    assert set(campaign["iterations"]) == {str(m["iteration"]) for m in summary_metrics(run_dir)}
    for m in summary_metrics(run_dir):
        k, folder = m["iteration"], run_dir / f"iter-{m['iteration']:03d}"
        fit = json.loads((folder / "state.json").read_text())["stages"]["fit"]
        numbers = campaign["iterations"][str(k)]
        parity, calibration, rdf = numbers["parity"], numbers["calibration"], numbers["rdf"]
        assert parity["deployed"] == "composite" and parity["n_test"] == m["n_test"] > 0
        assert parity["errors"]["composite"] == pytest.approx(m["errors"], nan_ok=True)
        assert parity["errors"]["composite"]["force_rmse"] > 0
        assert parity["plot"] == str(folder / "plots" / "parity.png")
        assert report["plots"][f"iteration {k}: held-out parity"] == [parity["plot"]]
        threshold = calibration["threshold"]
        assert threshold == m["variance_threshold"]["threshold"] == fit["variance"]["threshold"] > 0
        assert calibration["quantile"] == 0.99 and calibration["quantile_value"] == m["variance_threshold"]["quantile_value"]
        assert calibration["spearman"] == m["variance_vs_error"]["spearman"] and calibration["n_atoms"] == m["variance_vs_error"]["n_atoms"]
        new = [row.get("variance") for row in labels if row.iteration == k and row.get("variance") is not None]
        assert calibration["new_labels"] == m["new_labels"] and calibration["labels_with_variance"] == len(new) > 0
        assert calibration["labels_over_threshold"] == sum(v > threshold for v in new)
        assert calibration["prospective_over_held_out"] == pytest.approx(
            m["prospective_errors"]["force_rmse"] / m["errors"]["force_rmse"])
        assert calibration["plot"] == str(folder / "plots" / "variance_vs_error.png")
        assert report["plots"][f"iteration {k}: variance calibration"] == [calibration["plot"]]
        # on the page: each heading, then its numbers and its figure with a caption, in this order
        group = text.index(f"<h2 class='group'>iteration {k}</h2>")
        for heading, shown in ((f"iteration {k}: held-out parity", [f"{m['errors']['force_rmse']:.3f}", "held-out bootstrap frames"]),
                               (f"iteration {k}: variance calibration", [f"{threshold:.5f}", f"{threshold:.3g} eV²"])):
            section = text.split(f"<h3>{heading}</h3>")[1].split("<h3>")[0]
            assert text.index(f"<h3>{heading}</h3>") > group
            assert section.count("data:image/png;base64") == 1 and "<figcaption>" in section, heading
            assert all(figure in section for figure in shown), (heading, shown)
        # one RDF entry per exploration run, its distance the one its final frames give
        tasks = sorted(p.name for p in (folder / "md").iterdir() if (p / "trajectory.xyz").exists())
        assert sorted(rdf["runs"]) == tasks == sorted(m["runs"])
        assert rdf["reference"] == {**rdf["reference"], "source": "iter-000/bootstrap.xyz", "n_frames": len(reference)}
        ref_rdf = partial_rdfs(reference, rdf["r_max_A"])
        for task, entry in rdf["runs"].items():
            frames = ase.io.read(folder / "md" / task / "trajectory.xyz", "-10:")
            final = [f for f in frames if f.info["md_segment"] == frames[-1].info["md_segment"]]
            assert entry["n_frames"] == len(final) and entry["md_steps"] == [final[0].info["md_step"], 600]
            assert entry["distance"] == pytest.approx(rdf_distance(partial_rdfs(final, rdf["r_max_A"]), ref_rdf), abs=1e-4)
            assert entry["distance"] == by_iteration[k]["rdf_distance"][task] > 0
            assert set(entry["distance_by_pair"]) == {"Si-Si", "Si-O", "O-O"}
            assert entry["verdict"] == m["clustering"][task] and 1.45 < entry["first_peak_A"]["Si-O"] < 1.8
        assert report["plots"][f"iteration {k}: RDF of each exploration run"] == [str(run_dir / "report" / f"iter-{k:03d}_rdf.png")]
    # nothing of the iterations is left to the catch-all; summary.json folded away at the end
    assert not [p for p in report["plots"].get("plots of the run", []) if "/iter-" in p]
    assert "<details class='raw'><summary>summary.json</summary>" in text and "<h2>summary.json</h2>" not in text


def test_every_gate_is_measured_and_logged_whichever_gates_decide(campaign):
    """The suite's campaign decides on the clean gate alone; the confidence and accuracy figures
    are measured all the same, in metrics.json, the judgement and the log, and the stop rule
    replayed on them with all three gates gives the verdict the full rule would have."""
    from alcgap.workflow.stages.stop import Judgement, decide, gates

    run_dir, summary = campaign
    config = load_campaign_config(QUICK)
    full = config.model_copy(update={"judge": config.judge.model_copy(update={"gates": ["clean", "confidence", "accuracy"]})})
    log = (run_dir / "campaign.log").read_text()
    for m in summary_metrics(run_dir):
        judged = json.loads((run_dir / f"iter-{m['iteration']:03d}" / "state.json").read_text())["stages"]["judge"]
        judgement = Judgement(**judged["judgement"])
        assert set(m["gate_figures"]) == {"clean", "confidence", "accuracy"}
        assert m["confidence"]["frames"] > 0 and 0.0 <= m["confidence"]["confident_fraction"] <= 1.0
        assert judgement.n_target_frames == m["confidence"]["frames"] and judgement.tolerance == 1.0
        assert m["explored_test_set"]["n_frames"] == judgement.n_explored > 0
        verdict = gates(judgement, full)
        assert verdict.confidence == (judgement.confident_fraction >= 0.9)
        said = decide(judgement, full)
        assert said.rule != "converged" or all(verdict), said
        assert f"iteration {m['iteration']}: gates (deciding: clean): clean:" in log and "confidence:" in log


def test_the_explored_test_set_grows_every_iteration_and_never_trains(campaign):
    run_dir, summary = campaign
    store = LabelStore(run_dir / "data.db")
    tests = [row for row in store.rows() if row.origin.startswith("test:")]
    per_iteration = Counter(row.iteration for row in tests)
    n = len(summary_metrics(run_dir))
    assert all(per_iteration[k] >= 1 for k in range(1, n + 1)), per_iteration
    sizes = [m["explored_test_set"]["n_frames"] for m in summary_metrics(run_dir)]
    assert all(b > a for a, b in zip(sizes, sizes[1:])), sizes  # grows every iteration
    test_keys = {row.fingerprint for row in tests}
    for k in range(1, n + 1):
        train = ase.io.read(run_dir / f"iter-{k:03d}" / "train.xyz", ":")
        assert not {a.info["fingerprint"] for a in train} & test_keys
    # drawn regardless of flags: the draw's record says so, and each comes from an exploration run
    for m in summary_metrics(run_dir):
        assert all(e["kind"] == "test" and e["task"] in m["runs"] for e in m["test_draw"])
    for m in summary_metrics(run_dir):  # every error comes with its uncertainty
        assert m["explored_test_set"]["se"] > 0 and m["held_out_with_error"]["se"] > 0
        assert 0 < m["calibration"]["in_sample"]["inside"] <= 1


def summary_metrics(run_dir) -> list[dict]:
    return json.loads((run_dir / "summary.json").read_text())["metrics"]


def test_a_changed_config_is_refused_on_resume(campaign):
    run_dir, _ = campaign
    changed = dict(QUICK, aux={"cutoffs": {"Si-Si": 1.5, "Si-O": 1.1, "O-O": 0.8}})
    with pytest.raises(ResumeRefused, match=r"aux.cutoffs.Si-Si: 1.6 -> 1.5"):
        run_campaign(load_campaign_config(changed), run_dir)


def test_a_moved_campaign_resumes_and_its_stop_rule_follows_todays_limits(campaign, tmp_path):
    """The run directory moves (another mount point): its checkpoints name paths relative to it.
    The stop rule is re-decided on resume with today's stop settings: a lower max_iterations ends
    it at iteration 1; raised again, it goes on to the same converged end, with no new work."""
    import shutil

    run_dir, summary = campaign
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(run_dir, moved)
    for name in ("iter-001/state.json", "iter-001/exploration.json", "iter-001/metrics.json", "summary.json"):
        assert str(run_dir) not in (moved / name).read_text(), name
    labels = len(LabelStore(moved / "data.db").rows(status=None))
    cut = resume_campaign(moved, stop={"max_iterations": 1})
    assert (cut["iterations"], cut["stopped_by"]) == (1, "max_iterations"), cut["why"]
    assert yaml.safe_load((moved / "campaign.yaml").read_text())["stop"]["max_iterations"] == 1
    again = resume_campaign(moved, stop={"max_iterations": 4})
    assert (again["iterations"], again["stopped_by"]) == (summary["iterations"], "converged")
    assert [m["errors"] for m in again["metrics"]] == [m["errors"] for m in summary["metrics"]]
    assert len(LabelStore(moved / "data.db").rows(status=None)) == labels  # nothing recomputed
    assert not (moved / "driver.json").exists() and stale_processes(moved) == []


def test_an_edit_of_the_frozen_config_is_checked_like_any_change(campaign, tmp_path):
    import shutil

    run_dir, _ = campaign
    moved = tmp_path / "run"
    shutil.copytree(run_dir, moved)
    frozen = yaml.safe_load((moved / "campaign.yaml").read_text())
    frozen["aux"]["cutoffs"]["Si-Si"] = 1.5
    (moved / "campaign.yaml").write_text(yaml.safe_dump(frozen))
    with pytest.raises(ResumeRefused, match=r"aux.cutoffs.Si-Si: 1.6 -> 1.5"):
        resume_campaign(moved)


class SlowVashishta(LammpsReference):
    """The real Vashishta reference, made as slow as a small DFT call so a kill lands mid-labelling."""

    def compute(self, atoms):
        if atoms.pbc.all():  # condensed structures only: dimer scans stay fast
            time.sleep(0.5)
        return super().compute(atoms)


def _session_of(sid: int) -> list[int]:
    """Running processes of session ``sid`` (the /proc reader the lock module uses)."""
    from alcgap.procs import alive, proc_stat

    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and alive(int(p.name))
            and (proc_stat(int(p.name)) or (None, 0, 0, None))[3] == sid]


def test_a_kill_sweep_loses_nothing_and_ends_where_the_unkilled_campaign_did(campaign, tmp_path):
    """The same campaign as the module's, driven by ``alcgap run``/``resume``, SIGKILLed 6 times
    (benchmarks/kill_sweep.py): in the bootstrap, the first fit, exploration MD and labelling,
    the second fit and MD, each a random moment into its stage, and resumed at once. The first
    kill hits the driver alone (an OOM kill): its watchdog stops what it left, with no resume.
    At the end: 0 labels lost or changed, 0 computed twice, the same structures stored as in the
    unkilled run, the same stop, and no process of any killed driver left."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import kill_sweep

    run_dir, summary = campaign
    source = tmp_path / "campaign.yaml"
    source.write_text(yaml.safe_dump(QUICK, sort_keys=False))
    killed = tmp_path / "killed"

    def after_kill(event: dict) -> None:
        if not event["driver_alone"]:
            return
        # its Parsl worker pools, in process groups of their own, would go on: the watchdog, in
        # a session of its own, stops them (Parsl's interchange, which lost its mark when it
        # renamed itself, included)
        log = killed / "watchdog.log"
        said = lambda: log.exists() and f"driver {event['pid']} of" in log.read_text()  # noqa: E731
        deadline = time.time() + 60
        while time.time() < deadline and (stale_processes(killed) or _session_of(event["pid"]) or not said()):
            time.sleep(0.5)
        assert stale_processes(killed) == [] and _session_of(event["pid"]) == [], \
            f"processes of the killed driver still running: {_session_of(event['pid'])}"
        assert said() and "stopped" in log.read_text(), log.read_text()  # there was something to stop

    with open(tmp_path / "killed.log", "w") as log:
        events = kill_sweep.sweep(source, killed, log, kills=6, seed=3, first_alone=True, on_kill=after_kill)
    result = kill_sweep.compare(killed, run_dir, events)
    print(json.dumps({k: v for k, v in result.items()}, indent=1))
    assert events[-1].get("exit_code") == 0, (tmp_path / "killed.log").read_text()[-3000:]
    assert result["kills"] == 6
    where = result["killed_in"]
    assert where[0].startswith("0/") and {"1/fit", "1/md"} <= set(where), where
    assert result["labels_lost_or_changed"] == 0 and result["labels_computed_twice"] == 0
    assert result["same_structures_as_unkilled"], result
    assert result["stopped_by"] == [summary["stopped_by"]] * 2
    assert result["processes_of_the_run_left"] == 0
    for event in events[:-1]:
        assert _session_of(event["pid"]) == [], f"driver {event['driver']} left processes running"
    no_duplicate_labels(LabelStore(killed / "data.db"))


def test_python_api_with_a_custom_selection(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # Parsl workers unpickle the function
    def most_uncertain_two(candidates, known, budget):
        ranked = sorted(candidates, key=lambda a: -a.info.get("max_variance", 0.0))[:2]
        for atoms in ranked:
            atoms.info["flag_reasons"] = "custom: most uncertain"
        return ranked

    # a force gate no model meets here, so that the campaign stops at its iteration limit; and
    # the plain potential (no aux, benchmarks/campaign_aux.py's control): no dimer scans, a main
    # GAP on the total energies, exploration MD without an aux table
    config = dict(QUICK, potential="plain", explore=dict(QUICK["explore"], sizes=[1]),
                  judge=dict(QUICK["judge"], target_size=1, force_tolerance=0.05, gates=["clean", "accuracy"]),
                  stop={"max_iterations": 1})
    summary = run_campaign(config, tmp_path / "run", select_fn=most_uncertain_two)
    assert summary["iterations"] == 1 and summary["stopped_by"] == "max_iterations"
    store = LabelStore(tmp_path / "run" / "data.db")
    assert {row.origin for row in store.rows(status=None) if row.natoms <= 2} == {"isolated"}  # no dimer scan
    state = json.loads((tmp_path / "run" / "iter-001" / "state.json").read_text())["stages"]
    assert state["fit"]["deployed"] == "plain" and state["fit"]["xml"].endswith("plain.xml")
    from alcgap.calculator import component_labels

    assert "aux" not in component_labels(tmp_path / "run" / "iter-001" / "fit" / "plain.xml")
    in_lammps = next((tmp_path / "run" / "iter-001" / "md").glob("*/in.lammps")).read_text()
    assert "pair_style" in in_lammps and "table" not in in_lammps
    explored = [row for row in store.rows() if row.origin.startswith("explore:")]
    assert 1 <= len(explored) <= 2
    assert all(row.data["selection_reason"] == "custom: most uncertain" for row in explored)

    # stopped at its limit, moved to another path, resumed with the limit raised: it runs one
    # more iteration for real, and learns from it with the same selection
    import shutil

    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(tmp_path / "run", moved)
    extended = resume_campaign(moved, select_fn=most_uncertain_two, stop={"max_iterations": 2})
    assert (extended["iterations"], extended["stopped_by"]) == (2, "max_iterations") and len(extended["metrics"]) == 2
    # iteration 1 kept as it was (its plots' paths read back in the run's new place)
    assert json.loads(json.dumps(extended["metrics"][0]).replace(str(moved), str(tmp_path / "run"))) == summary["metrics"][0]
    second = [row for row in LabelStore(moved / "data.db").rows() if row.origin.startswith("explore:") and row.iteration == 2]
    assert 1 <= len(second) <= 2 and all(row.data["selection_reason"] == "custom: most uncertain" for row in second)
    assert str(tmp_path / "run") not in (moved / "iter-002" / "state.json").read_text()


def test_resume_accepts_what_does_not_change_a_label_and_refuses_what_does(tmp_path):
    """A longer CP2K walltime, more threads or another launcher of the same code are accepted on
    resume and recorded in the frozen config; a change of the physics (EPS_SCF) is refused, named."""
    from alcgap.workflow.campaign import Campaign

    cp2k = dict(DEMO, reference={"kind": "cp2k", "method": "xtb", "walltime": 600})
    Campaign(load_campaign_config(cp2k), tmp_path)._freeze_config()
    longer = dict(cp2k, reference={**cp2k["reference"], "walltime": 7200, "omp_threads": 2})
    Campaign(load_campaign_config(longer), tmp_path)._freeze_config()
    frozen = yaml.safe_load((tmp_path / "campaign.yaml").read_text())
    assert frozen["reference"]["walltime"] == 7200 and frozen["reference"]["omp_threads"] == 2
    tighter = dict(cp2k, reference={**cp2k["reference"], "eps_scf": 1e-7})
    with pytest.raises(ResumeRefused, match=r"reference.eps_scf: 1e-06 -> 1e-07"):
        Campaign(load_campaign_config(tighter), tmp_path)._freeze_config()


def test_a_pick_with_atoms_too_close_is_recorded_not_labelled_and_an_input_error_stops_labelling(tmp_path):
    """An exploration structure with a Si-O pair at 0.3 A never reaches the reference: it is stored
    as too_close, with the pair and the limit. A label whose input the reference refused ends
    labelling at once, with the program's message (a stand-in future here: error handling only)."""
    from concurrent.futures import Future
    from types import SimpleNamespace

    from alcgap.reference import Label, LabelStatus
    from alcgap.store import Provenance
    from alcgap.structures import beta_cristobalite
    from alcgap.reference import make_reference
    from alcgap.workflow.context import Run
    from alcgap.workflow.futures import Pending
    from alcgap.workflow.progress import ProgressBoard
    from alcgap.workflow.stages.label import Labeller, LabellingStopped

    config = load_campaign_config(QUICK)
    called = []
    campaign = Run(config, tmp_path, make_reference(config.reference, config.species), LabelStore(tmp_path / "data.db"),
                   SimpleNamespace(label=lambda *args: called.append(args)), ProgressBoard(tmp_path, live=False))
    labeller = Labeller(campaign)
    crystal = beta_cristobalite()
    si = next(a.index for a in crystal if a.symbol == "Si")
    o = next(a.index for a in crystal if a.symbol == "O")
    close = crystal.copy()
    close.positions[o] = close.positions[si] + [0.3, 0.0, 0.0]
    results = []
    labeller.submit(Pending(), close, Provenance(1, "explore:s1-T4000-x1"), results)
    assert results == ["too_close"] and not called
    (row,) = campaign.store.rows(status=None)
    assert row.status == "too_close" and "Si-O 0.300 A < 0.885 A" in row.data["label_reason"]

    refused = Future()
    refused.set_result((Label(LabelStatus.INPUT_ERROR, reason="unknown basis set FOO for Si"), 0.0, 0.1))
    campaign.apps = SimpleNamespace(label=lambda *args: refused)
    pending = Pending()
    labeller.submit(pending, crystal, Provenance(1, "explore:s1-T4000-x1"), [])
    with pytest.raises(LabellingStopped, match="unknown basis set FOO"):
        pending.drain()
    assert campaign.store.summary().by_status.get("input_error") == 1  # the refused label is kept, as failed


def test_an_md_task_that_loses_a_rank_is_a_failure_the_campaign_survives_and_a_resume_reruns(tmp_path):
    """A 2-rank exploration task loses a rank at its first checkpoint (SIGKILL, as a lost node or
    an OOM kill: tests/data/kill_one_rank.sh as the site's MD launcher). The campaign goes on: the
    task is recorded as failed, with why, and what it flagged up to its checkpoint is picked from.
    The driver is then killed while the other task still runs; the resume runs the failed task
    again (from its checkpoint), not counting it as done."""
    site = yaml.safe_load((Path(__file__).parents[1] / "sites" / "local.yaml").read_text())
    site["tasks"]["md"].update(ranks=2, launcher=f"bash {Path(__file__).parent / 'data' / 'kill_one_rank.sh'} "
                                                 "'*-x1' $PARSL_MPI_PREFIX")
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    # 300-step runs, a checkpoint every 50 steps: short, and the rank is lost at step 50
    config = dict(QUICK, explore=dict(QUICK["explore"], protocol_scale=0.002, checkpoint_every=50), stop={"max_iterations": 1})
    (tmp_path / "campaign.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    plan_path = run / "iter-001" / "exploration.json"
    child = subprocess.Popen([sys.executable, "-m", "alcgap.cli", "run", str(tmp_path / "campaign.yaml"), "--site",
                              str(tmp_path / "site.yaml"), "--run-dir", str(run)], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    failed = big = None
    deadline = time.time() + 600
    try:
        while time.time() < deadline and child.poll() is None:
            try:
                plan = json.loads(plan_path.read_text())
            except (OSError, ValueError):
                plan = {}
            failed = next((s for t, s in plan.get("md", {}).items() if t.endswith("-x1")), None)
            big = next((s for t, s in plan.get("md", {}).items() if t.endswith("-x2")), None)
            if failed is not None and any(name.endswith("-x1") for name in plan.get("picks", {})):
                break
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the driver and its interchange, mid-exploration
        child.wait()
    assert failed is not None, f"the failure was never recorded: {child.stderr.read().decode()[-3000:]}"
    progress = json.loads((run / "progress.json").read_text())  # what `alcgap status` showed while it ran
    assert progress["stage"] == "iteration 1: explore_select_label" and any(t.endswith("-x2") for t in progress["md"])
    assert big is None, "the kill came too late: the other task had finished"
    # the campaign went on past the failure: recorded with why, and picked from
    assert failed["verdict"] == "failed" and failed["failure"] == "interrupted", failed
    assert "exit" in failed["why"].lower(), failed["why"]
    task_id = next(t for t in plan["md"] if t.endswith("-x1"))
    folder = run / "iter-001" / "md" / task_id
    assert "killing rank" in (folder / "md.err").read_text()
    assert not (folder / "result.json").exists()
    salvaged = folder / "flagged-to-checkpoint.xyz"
    if plan["picks"][task_id]["n_candidates"]:
        assert all(a.info["md_step"] <= 50 for a in ase.io.read(salvaged, ":"))
    # the report of the killed campaign shows what finished and marks what did not
    from alcgap.report.write import write_report

    write_report(run)
    report = json.loads((run / "report" / "report.json").read_text())["campaign"]
    assert report["status"]["state"] == "stopped without finishing" and "alcgap resume" in report["status"]["hint"]
    assert report["status"]["current"] == "iteration 1: explore_select_label"
    runs = report["series"]["1"]["runs"]
    assert runs[task_id]["verdict"] == "failed"
    big_id = next(t for t in runs if t.endswith("-x2"))
    # not finished: running (its attempt's monitor so far) or still waiting for the one MD slot
    # (tasks.md.max_concurrent: auto holds one 2-rank task on 2 cores)
    assert runs[big_id]["verdict"] in ("running", "not started") and (runs[big_id]["verdict"] == "not started") == (not runs[big_id]["steps"])

    summary = resume_campaign(run)  # the default site: no fault
    assert summary["iterations"] == 1
    again = json.loads(plan_path.read_text())["md"][task_id]
    assert again["verdict"] in ("clean", "clustered"), again  # run again, to its end
    result = json.loads((folder / "result.json").read_text())
    assert result["resumed_from_step"] == 50 and result["steps_done"] == result["steps_requested"]
    assert summary["metrics"][0]["runs"][task_id]["verdict"] == again["verdict"]
    no_duplicate_labels(LabelStore(run / "data.db"))
