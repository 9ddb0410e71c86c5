"""The parts of a report only a campaign's run directory has (``alcgap.workflow.campaign``).

- :func:`campaign_status`: finished (by which rule), running (whose driver) or stopped without
  finishing (a kill: resume it), and the stage each iteration has reached;
- :func:`aux_plot`: each pair's reference dimer points, the repulsive target the aux was fitted to
  and the aux itself (its exact table, the core continuation below the scan included), on linear
  and log axes, the cutoff marked;
- :func:`run_plots`: per iteration, each exploration run's shortest distance per pair, largest
  variance and temperature against the MD step, with the flag thresholds, the flagged steps and
  the first unphysical step drawn;
- :func:`label_rows`: the labels each iteration added, and why (short pair or variance), from
  which run and step;
- :func:`cluster_pictures`: for a run judged clustered, its first clustered frame judged again,
  the formulas of its groups and a picture of the largest group and its neighbourhood.

Every function reads what is there and never fails on what is missing: a running or killed
campaign gets the part it has.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib.ticker
import numpy as np

from alcgap.analysis.plots import _save, plt
from alcgap.workflow.state import IterationState, iteration_dir, located

KINDS = {"short_pair": "short pair", "variance": "variance", "informative": "informative (fallback)"}
PAIR_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]


def _state(run: Path, iteration: int) -> dict:
    try:
        return IterationState(run, iteration).stages
    except (OSError, ValueError, KeyError):
        return {}


def _config(run: Path):
    """The campaign's frozen config (campaign.yaml)."""
    from alcgap.config import CampaignConfig, ConfigError, read_yaml

    return CampaignConfig.model_validate(located(read_yaml(run / "campaign.yaml", ConfigError), run))


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def campaign_status(run: Path) -> dict:
    """How far the campaign got and whether a driver is on it."""
    from alcgap.workflow.lock import driver_of, driver_running

    summary = _json(run / "summary.json")
    owner = driver_of(run)
    iterations = sorted(int(p.name.split("-")[1]) for p in run.glob("iter-*") if p.is_dir() and p.name[5:].isdigit())
    stages = {k: list(_state(run, k)) for k in iterations}
    running = driver_running(owner)
    if summary is not None and not running:
        state = {"state": "finished", "stopped_by": summary.get("stopped_by"), "why": summary.get("why")}
    elif running:
        state = {"state": "running", "driver": owner}
    elif owner:
        state = {"state": "stopped without finishing", "driver": owner,
                 "hint": f"its driver (pid {owner.get('pid')}) is gone: `alcgap resume {run}` continues it"}
    else:
        state = {"state": "not started" if not iterations else "stopped without finishing",
                 "hint": f"`alcgap resume {run}` continues it" if iterations else ""}
    last = iterations[-1] if iterations else None
    order = ["fit", "explore_select_label", "judge"] if last else ["dimers", "aux", "bootstrap", "label", "split", "distances"]
    unfinished = [name for name in order if last is not None and name not in stages.get(last, [])]
    return {**state, "iterations": iterations, "stages_done": stages,
            "current": f"iteration {last}: {unfinished[0]}" if unfinished and state["state"] != "finished" else None}


# ---------------------------------------------------------------- the auxiliary


def aux_curves(run: Path) -> dict:
    """Per pair: reference dimer points, the repulsive target, the aux on a fine grid, the cutoff."""
    stages = _state(run, 0)
    curves, aux = (stages.get("dimers") or {}).get("curves") or {}, stages.get("aux") or {}
    if not curves or not aux.get("aux_xml"):
        return {}
    from alcgap.auxiliary.fit import make_targets
    from alcgap.auxiliary.table import AuxTable
    from alcgap.dimers import DimerCurve
    from alcgap.structures import pair_key

    config = _config(run)
    cutoffs = config.aux.pair_cutoffs()
    dimers = {pair_key(*name.split("-")): DimerCurve(pair_key(*name.split("-")), np.array(c["r"]), np.array(c["energy"]),
                                                     c.get("failed", {})) for name, c in curves.items() if c["r"]}
    targets = make_targets(dimers, {p: r for p, r in cutoffs.items() if p in dimers}, config.aux)
    table = AuxTable.from_xml(aux["aux_xml"])
    out = {}
    for pair, target in targets.items():
        grid = np.linspace(max(0.05, float(target.r.min())), cutoffs[pair] + 0.4, 600)
        energy, _ = table.pair(*pair).evaluate(grid)
        curve = dimers[pair]
        out[target.name] = {"cutoff": float(cutoffs[pair]), "reference_r": curve.distances.tolist(),
                            "reference_eV": (curve.energies - curve.energy_at(cutoffs[pair])).tolist(),
                            "target_r": target.r.tolist(), "target_eV": target.energy.tolist(),
                            "scan_from": float(target.r_scan.min()), "aux_r": grid.tolist(), "aux_eV": energy.tolist()}
    return out


def aux_plot(curves: dict, path: Path) -> Path | None:
    if not curves:
        return None
    fig, axes = plt.subplots(2, len(curves), figsize=(4.6 * len(curves), 8.6), squeeze=False)
    for column, (name, c) in enumerate(curves.items()):
        for row, log in enumerate((False, True)):
            ax = axes[row][column]
            aux_r, aux_e = np.array(c["aux_r"]), np.array(c["aux_eV"])
            ref_r, ref_e = np.array(c["reference_r"]), np.array(c["reference_eV"])
            tgt_r, tgt_e = np.array(c["target_r"]), np.array(c["target_eV"])
            keep = (aux_e > 0) if log else np.ones_like(aux_e, bool)
            ax.plot(aux_r[keep], aux_e[keep], "-", color="tab:green", lw=2, label="aux (its LAMMPS table)")
            core = tgt_r < c["scan_from"]
            ax.plot(tgt_r[~core], tgt_e[~core], "s", ms=4, mfc="none", color="tab:blue", label="repulsive target (scan)")
            ax.plot(tgt_r[core], tgt_e[core], "^", ms=4, mfc="none", color="tab:purple",
                    label="repulsive target (core below the scan)")
            ref_keep = (ref_e > 0) if log else np.ones_like(ref_e, bool)
            ax.plot(ref_r[ref_keep], ref_e[ref_keep], "o", ms=3, color="black", label="reference dimer E(r) - E(r_cut)")
            ax.axvline(c["cutoff"], color="grey", ls="--", lw=1)
            ax.annotate(f"cutoff {c['cutoff']:g} Å", (c["cutoff"], 0.02), xycoords=("data", "axes fraction"),
                        rotation=90, fontsize=8, ha="right", va="bottom", color="grey")
            if log:
                ax.set_yscale("log")
            else:  # where the aux meets the reference: the last half of its range and the well beyond
                lo = 0.5 * c["cutoff"]
                window = ref_e[ref_r >= lo] if (ref_r >= lo).any() else ref_e
                bottom = min(float(window.min()), 0.0)
                ax.set_xlim(lo, c["cutoff"] + 0.4)
                ax.set_ylim(1.3 * bottom - 0.5, max(10.0, 4.0 * abs(bottom)))
            ax.set(xlabel="pair distance r (Å)", ylabel="energy (eV)" + (", log" if log else ""),
                   title=f"{name}" + (" (log)" if log else ""))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))  # the legend's strip under the axes' labels
    return _save(fig, path, layout=False)


# ---------------------------------------------------------------- exploration runs


def run_series(run: Path, iteration: int) -> dict:
    """Per exploration run of ``iteration``: its monitor.jsonl as series, and what the judge said."""
    folder = iteration_dir(run, iteration)
    metrics = _json(folder / "metrics.json") or {}
    plan = _json(folder / "exploration.json") or {}
    summaries = located(plan.get("md", {}), run)
    out = {}
    for task in sorted(p for p in (folder / "md").glob("*") if p.is_dir()):
        lines = []
        path = task / "monitor.jsonl"
        if not path.exists():  # still running or killed: its attempt's file so far
            attempts = sorted(task.glob(".attempt-*/monitor.jsonl"), key=os.path.getmtime)
            path = attempts[-1] if attempts else path
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                lines.append(json.loads(line))
            except ValueError:
                break  # a line cut by a kill
        summary = summaries.get(task.name, {})
        out[task.name] = {
            "steps": [e["step"] for e in lines], "temperature": [e.get("temperature") for e in lines],
            "max_variance": [e.get("max_variance") for e in lines],
            "min_distances": {pair: [e["min_distances"].get(pair) for e in lines]
                              for pair in sorted({p for e in lines for p in e.get("min_distances", {})})},
            "flagged_steps": [e["step"] for e in lines if e.get("flags")],
            "verdict": summary.get("verdict", "running" if lines else "not started"),
            "first_bad_step": summary.get("first_bad_step"), "why": summary.get("why"),
            "failure": summary.get("failure"),
        }
    thresholds = {"flag_distances": metrics.get("flag_distances") or {},
                  "variance_threshold": (metrics.get("variance_threshold") or {}).get("threshold")}
    if not thresholds["variance_threshold"]:
        thresholds["variance_threshold"] = ((_state(run, iteration).get("fit") or {}).get("variance") or {}).get("threshold")
    return {"runs": out, **thresholds}


def run_plots(series: dict, iteration: int, path: Path) -> Path | None:
    runs = series["runs"]
    if not any(r["steps"] for r in runs.values()):
        return None
    fig, axes = plt.subplots(len(runs), 3, figsize=(15, 3.2 * len(runs)), squeeze=False)
    for row, (name, r) in enumerate(runs.items()):
        steps = np.array(r["steps"])
        ax_d, ax_v, ax_t = axes[row]
        for k, (pair, values) in enumerate(r["min_distances"].items()):
            colour = PAIR_COLOURS[k % len(PAIR_COLOURS)]
            ax_d.plot(steps, [np.nan if v is None else v for v in values], color=colour, lw=1.2, label=pair)
            flag = series["flag_distances"].get(pair)
            if flag:
                ax_d.axhline(flag, color=colour, ls=":", lw=1)
        ax_v.plot(steps, [np.nan if v is None else v for v in r["max_variance"]], color="tab:red", lw=1.2)
        if series.get("variance_threshold"):
            ax_v.axhline(series["variance_threshold"], color="tab:red", ls=":", lw=1)
        ax_v.set_yscale("log")
        shown = [v for v in r["max_variance"] if v] + ([series["variance_threshold"]] if series.get("variance_threshold") else [])
        if shown and np.floor(np.log10(max(shown))) > np.ceil(np.log10(min(shown))):
            # two labelled powers of ten on the axis: minor labels would only crowd it
            ax_v.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax_t.plot(steps, [np.nan if v is None else v for v in r["temperature"]], color="tab:gray", lw=1.2)
        for ax in (ax_d, ax_v, ax_t):
            for step in r["flagged_steps"]:
                ax.axvline(step, color="gold", alpha=0.25, lw=2)
            if r["first_bad_step"] is not None:
                ax.axvline(r["first_bad_step"], color="black", ls="--", lw=1.2)
        ax_d.set(xlabel="MD step", ylabel="shortest distance (Å)",
                 title=f"{name}: {r['verdict']}" + (f" from step {r['first_bad_step']}" if r["first_bad_step"] is not None else ""))
        if r["min_distances"]:
            ax_d.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=4, frameon=False)
        ax_v.set(xlabel="MD step", ylabel="largest per-atom variance (eV²)", title="GAP variance (dotted: flag threshold)")
        ax_t.set(xlabel="MD step", ylabel="temperature (K)", title="temperature")
    fig.suptitle(f"iteration {iteration}: exploration runs (gold: flagged steps; dashed: first unphysical step; "
                 "dotted: flag thresholds)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return _save(fig, path, layout=False)


# ---------------------------------------------------------------- labels


def label_rows(run: Path) -> list[dict]:
    """Every selected label: iteration, run, MD step, why it was chosen, its status."""
    if not (run / "data.db").exists():
        return []
    from alcgap.store import LabelStore

    rows = []
    for row in LabelStore(run / "data.db").rows(origin="explore*", status=None):
        details = (row.data or {}).get("details") or {}
        reason = (row.data or {}).get("selection_reason") or ""
        rows.append({"iteration": row.iteration, "run": row.origin.split(":", 1)[-1], "md_step": details.get("md_step"),
                     # the selection's kind leads its reason: "short_pair: ...", "variance: ...",
                     # "informative: ..." (the fallback pick), or a custom selection's words
                     "why": KINDS.get(reason.split(":", 1)[0].strip(), reason.split(":", 1)[0][:40] or "?"),
                     "reason": reason[:160], "atoms": row.natoms, "status": row.status,
                     "variance": row.get("variance"), "min_distance": row.get("min_distance")})
    return sorted(rows, key=lambda r: (r["iteration"], r["run"], r["md_step"] or 0))


# ---------------------------------------------------------------- clusters


def cluster_pictures(run: Path, iteration: int, series: dict, out: Path) -> list[dict]:
    """For each run of ``iteration`` judged clustered: its first clustered frame judged again by
    the campaign's criteria, the formulas of the groups found, and a picture of the largest group
    and the atoms within 3 A of it (ASE's renderer; the group's atoms drawn larger)."""
    import ase.io

    from alcgap.analysis.clustering import detect_clustering
    from alcgap.explore.distances import DistanceTable, clustering_criteria

    config = _config(run)
    table = (_state(run, 0).get("distances") or {}).get("table")
    if not table:
        return []
    criteria = clustering_criteria(config.species, DistanceTable.from_dict(table), config.judge.clustering)
    found = []
    for task, r in series["runs"].items():
        if r["verdict"] != "clustered" or r["first_bad_step"] is None:
            continue
        flagged = iteration_dir(run, iteration) / "md" / task / "flagged.xyz"
        if not flagged.exists():
            continue
        frames = [f for f in ase.io.read(flagged, ":") if f.info.get("md_step", -1) >= r["first_bad_step"]]
        if not frames:
            continue
        frame = frames[0]
        verdict = detect_clustering(frame, criteria)
        if not verdict.groups:
            continue
        group = max(verdict.groups, key=len)
        all_atoms = range(len(frame))
        near = sorted(set(group) | {int(i) for g in group
                                    for i in np.flatnonzero(frame.get_distances(g, all_atoms, mic=True) < 3.0)})
        picture = frame[near]
        # one periodic image: every atom where the minimum image puts it around the group's first
        picture.positions = frame.get_distances(group[0], near, mic=True, vector=True)
        picture.set_pbc(False)
        picture.set_cell(None)
        path = out / f"iter-{iteration:03d}_{task}_cluster.png"
        ase.io.write(path, picture, rotation="15x,30y", radii=[0.55 if i in group else 0.3 for i in near], scale=60)
        found.append({"iteration": iteration, "run": task, "md_step": int(frame.info.get("md_step", -1)),
                      "formulas": verdict.formulas, "largest_group": [int(i) for i in group],
                      "picture": path, "summary": verdict.summary()})
    return found


# ---------------------------------------------------------------- held-out parity and variance calibration

#: the campaign's per-iteration plots (alcgap.workflow.apps.fit_main, Campaign._judge)
PARITY_PNG = Path("plots") / "parity.png"
CALIBRATION_PNG = Path("plots") / "variance_vs_error.png"


def iteration_checks(run: Path, iteration: int, labels: list[dict] | None = None) -> dict:
    """The numbers behind an iteration's held-out parity plot and its variance calibration plot.

    ``parity``: the held-out errors of every model the iteration fitted (the fit stage's, else
    metrics.json's for the deployed one), on how many held-out frames. ``calibration``: the
    variance threshold and how it was set (factor x quantile of the per-atom variance over the
    held-out atoms), the Spearman correlation of predicted variance with the per-atom force error
    on the iteration's new labels, how many of those labels were over the threshold when picked
    (their largest per-atom variance, from ``labels``: :func:`label_rows`), and their prospective
    force error against the held-out one. A plot's entry is None when the iteration has not
    written it (yet); a figure the run has not written is None."""
    folder = iteration_dir(run, iteration)
    metrics = _json(folder / "metrics.json") or {}
    fit = _state(run, iteration).get("fit") or {}
    deployed = fit.get("deployed")
    errors = {name: e for name, e in (fit.get("errors") or {}).items() if isinstance(e, dict)}
    if not errors and isinstance(metrics.get("errors"), dict) and metrics["errors"]:
        given = metrics["errors"]  # the deployed model's, or (a hand-written file) per model
        errors = given if all(isinstance(v, dict) for v in given.values()) else {deployed or "model": given}
    parity_png = folder / PARITY_PNG
    parity = None
    if errors or parity_png.exists():
        parity = {"plot": str(parity_png) if parity_png.exists() else None, "deployed": deployed, "errors": errors,
                  "n_test": metrics.get("n_test", fit.get("n_test")), "n_train": metrics.get("n_train", fit.get("n_train"))}
    variance = metrics.get("variance_threshold") or fit.get("variance") or {}
    correlation = metrics.get("variance_vs_error") or {}
    calibration_png = folder / CALIBRATION_PNG
    calibration = None
    if variance or correlation or calibration_png.exists():
        threshold = variance.get("threshold")
        new = [r for r in labels or [] if r["iteration"] == iteration and r["status"] == "ok"]
        known = [r["variance"] for r in new if r.get("variance") is not None]
        over = sum(v > threshold for v in known) if threshold is not None else None
        prospective = metrics.get("prospective_errors") or {}
        held_out = (errors.get(deployed) if deployed else next(iter(errors.values()), None)) or {}
        ratio = None
        if prospective.get("force_rmse") is not None and held_out.get("force_rmse"):
            ratio = prospective["force_rmse"] / held_out["force_rmse"]
        calibration = {
            "plot": str(calibration_png) if calibration_png.exists() else None,
            "threshold": threshold,
            "set_by": variance.get("set_by") or ("calibrated" if "quantile" in variance else None),
            "quantile": variance.get("quantile"), "factor": variance.get("factor"),
            "quantile_value": variance.get("quantile_value"), "held_out_median": variance.get("median"),
            "held_out_max": variance.get("max"), "held_out_atoms": variance.get("n_atoms"),
            "spearman": correlation.get("spearman"), "n_atoms": correlation.get("n_atoms"),
            "new_labels": metrics.get("new_labels", len(new) if labels is not None else None),
            "labels_with_variance": len(known),
            "labels_over_threshold": over,
            "fraction_over_threshold": over / len(known) if known and over is not None else None,
            "label_max_variance": max(known) if known else None,
            "prospective_force_rmse": prospective.get("force_rmse"),
            "held_out_force_rmse": held_out.get("force_rmse"),
            "prospective_over_held_out": ratio,
        }
    return {"parity": parity, "calibration": calibration}
