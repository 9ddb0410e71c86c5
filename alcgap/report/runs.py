"""A campaign's exploration runs in the report:

- :func:`run_series` and :func:`run_plots`: per iteration, each exploration run's shortest
  distance per pair, largest variance and temperature against the MD step, with the flag
  thresholds, the flagged steps and the first unphysical step drawn;
- :func:`cluster_pictures`: for a run judged clustered, its first clustered frame judged again,
  the formulas of its groups and a picture of the largest group and its neighbourhood.

A run still going, or killed, shows the monitor lines its attempt has written so far.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ase.io
import matplotlib.ticker
import numpy as np

from alcgap.analysis.clustering import detect_clustering
from alcgap.analysis.plots import _save, plt
from alcgap.explore.distances import DistanceTable, clustering_criteria
from alcgap.report.records import iteration_stages, read_json
from alcgap.workflow.freeze import frozen_config
from alcgap.workflow.state import iteration_dir, located

PAIR_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]


def _monitor_lines(task: Path) -> list[dict]:
    """A run's monitor.jsonl, or while it runs (or after a kill) its newest attempt's, up to a cut line."""
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
    return lines


def run_series(run: Path, iteration: int) -> dict:
    """Per exploration run of ``iteration``: its monitor.jsonl as series, and what the judge said."""
    folder = iteration_dir(run, iteration)
    metrics = read_json(folder / "metrics.json") or {}
    plan = read_json(folder / "exploration.json") or {}
    summaries = located(plan.get("md", {}), run)
    out = {}
    for task in sorted(p for p in (folder / "md").glob("*") if p.is_dir()):
        lines = _monitor_lines(task)
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
        fit = iteration_stages(run, iteration).get("fit") or {}
        thresholds["variance_threshold"] = (fit.get("variance") or {}).get("threshold")
    return {"runs": out, **thresholds}


def run_plots(series: dict, iteration: int, path: Path) -> Path | None:
    """:func:`run_series` drawn: one row per run, its distances, variance and temperature."""
    runs = series["runs"]
    if not any(r["steps"] for r in runs.values()):
        return None
    fig, axes = plt.subplots(len(runs), 3, figsize=(15, 3.2 * len(runs)), squeeze=False)
    for row, (name, r) in enumerate(runs.items()):
        _run_row(axes[row], name, r, series)
    fig.suptitle(f"iteration {iteration}: exploration runs (gold: flagged steps; dashed: first unphysical step; "
                 "dotted: flag thresholds)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return _save(fig, path, layout=False)


def _run_row(axes, name: str, r: dict, series: dict) -> None:
    steps = np.array(r["steps"])
    ax_d, ax_v, ax_t = axes
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


def cluster_pictures(run: Path, iteration: int, series: dict, out: Path) -> list[dict]:
    """For each run of ``iteration`` judged clustered: its first clustered frame judged again by
    the campaign's criteria, the formulas of the groups found, and a picture of the largest group
    and the atoms within 3 A of it (ASE's renderer; the group's atoms drawn larger)."""
    config = frozen_config(run)
    table = (iteration_stages(run, 0).get("distances") or {}).get("table")
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
        path = out / f"iter-{iteration:03d}_{task}_cluster.png"
        _draw_group(frame, group, path)
        found.append({"iteration": iteration, "run": task, "md_step": int(frame.info.get("md_step", -1)),
                      "formulas": verdict.formulas, "largest_group": [int(i) for i in group],
                      "picture": path, "summary": verdict.summary()})
    return found


def _draw_group(frame, group: list[int], path: Path) -> None:
    """The group and every atom within 3 A of it, the group's atoms larger, as a PNG."""
    all_atoms = range(len(frame))
    near = sorted(set(group) | {int(i) for g in group
                                for i in np.flatnonzero(frame.get_distances(g, all_atoms, mic=True) < 3.0)})
    picture = frame[near]
    # one periodic image: every atom where the minimum image puts it around the group's first
    picture.positions = frame.get_distances(group[0], near, mic=True, vector=True)
    picture.set_pbc(False)
    picture.set_cell(None)
    ase.io.write(path, picture, rotation="15x,30y", radii=[0.55 if i in group else 0.3 for i in near], scale=60)
