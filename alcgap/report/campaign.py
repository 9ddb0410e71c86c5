"""The parts of a report only a campaign's run directory has (``alcgap.workflow.campaign``):

- :func:`campaign_status`: finished (by which rule), running (whose driver) or stopped without
  finishing (a kill: resume it), and the stage each iteration has reached;
- :func:`aux_curves` and :func:`aux_plot`: each pair's reference dimer points, the repulsive
  target the aux was fitted to and the aux itself (its exact table, the core continuation below
  the scan included), on linear and log axes, the cutoff marked;
- :func:`label_rows`: the labels each iteration added, and why (short pair or variance), from
  which run and step.

The exploration runs over time and the clusters they found are in :mod:`alcgap.report.runs`, the
held-out parity and variance calibration in :mod:`alcgap.report.checks`. Every function reads what
is there and never fails on what is missing: a running or killed campaign gets the part it has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alcgap.analysis.plots import _save, plt
from alcgap.auxiliary.fit import make_targets
from alcgap.auxiliary.table import AuxTable
from alcgap.dimers import DimerCurve
from alcgap.report.records import iteration_stages, read_json, stage_order
from alcgap.store import LabelStore
from alcgap.structures import pair_key
from alcgap.workflow.freeze import frozen_config
from alcgap.workflow.lock import driver_of, driver_running

#: a selection's kind (the start of its reason) as the report names it
KINDS = {"short_pair": "short pair", "variance": "variance", "informative": "informative (fallback)"}


def iterations_of(run: Path) -> list[int]:
    """The iterations a run directory has a folder for, in order."""
    return sorted(int(p.name.split("-")[1]) for p in run.glob("iter-*") if p.is_dir() and p.name[5:].isdigit())


def campaign_status(run: Path) -> dict:
    """How far the campaign got and whether a driver is on it."""
    summary = read_json(run / "summary.json")
    owner = driver_of(run)
    iterations = iterations_of(run)
    stages = {k: list(iteration_stages(run, k)) for k in iterations}
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
    order = stage_order(last or 0)
    unfinished = [name for name in order if last is not None and name not in stages.get(last, [])]
    return {**state, "iterations": iterations, "stages_done": stages,
            "current": f"iteration {last}: {unfinished[0]}" if unfinished and state["state"] != "finished" else None}


# ---------------------------------------------------------------- the auxiliary


def aux_curves(run: Path) -> dict:
    """Per pair: reference dimer points, the repulsive target, the aux on a fine grid, the cutoff."""
    stages = iteration_stages(run, 0)
    curves, aux = (stages.get("dimers") or {}).get("curves") or {}, stages.get("aux") or {}
    if not curves or not aux.get("aux_xml"):
        return {}
    config = frozen_config(run)
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
    """:func:`aux_curves` drawn: one column per pair, linear axes above and log axes below."""
    if not curves:
        return None
    fig, axes = plt.subplots(2, len(curves), figsize=(4.6 * len(curves), 8.6), squeeze=False)
    for column, (name, c) in enumerate(curves.items()):
        for row, log in enumerate((False, True)):
            _aux_panel(axes[row][column], name, c, log)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))  # the legend's strip under the axes' labels
    return _save(fig, path, layout=False)


def _aux_panel(ax, name: str, c: dict, log: bool) -> None:
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


# ---------------------------------------------------------------- labels


def label_rows(run: Path) -> list[dict]:
    """Every selected label: iteration, run, MD step, why it was chosen, its status."""
    if not (run / "data.db").exists():
        return []
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
