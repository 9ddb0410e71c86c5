"""The learning curve of a run: per iteration its held-out errors, the labels it used and the
clustering verdict of every exploration run, three panels side by side."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from alcgap.analysis.plots import COLOURS, _save, plt
from alcgap.report.records import IterationRecord

VERDICT_COLOURS = {"clean": "tab:green", "clustered": "tab:red"}
#: a panel's legend under it, off the data
BELOW = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "frameon": False}
#: the errors drawn: metrics key, marker style, legend name, digits shown; energies left, force right
ERROR_LINES = (("energy_mae_meV_atom", "o-", "energy MAE (left)", 1),
               ("energy_rmse_meV_atom", "s--", "energy RMSE (left)", 1),
               ("force_rmse_eV_A", "^:", "force RMSE (right)", 3))


def learning_curve_plot(records: Sequence[IterationRecord], path: str | os.PathLike) -> Path:
    """Per iteration: held-out errors, labels used and the clustering verdict of every run.

    Iterations with nothing to show (a campaign's iteration 0) are left out; with a few
    iterations every point carries its value, so a one- or two-point curve still reads. The
    legends sit under the panels, off the data."""
    records = [r for r in records if r.errors or r.labels is not None or r.new_labels is not None or r.clustering] \
        or list(records)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    x = [r.iteration for r in records]
    few = len(x) <= 4
    _errors_panel(axes[0], records, few)
    _labels_panel(axes[1], records, few)
    _verdicts_panel(axes[2], records)
    for a in axes:
        if x:
            a.set_xticks(x)
            a.set_xlim(min(x) - 0.5, max(x) + 0.5)
    return _save(fig, path)


def _errors_panel(ax, records: Sequence[IterationRecord], few: bool) -> None:
    """Energy errors (left axis) and force RMSE (right axis) of every model against the iteration."""
    twin = ax.twinx()
    models = list(dict.fromkeys(m for r in records for m in r.errors))
    for k, model in enumerate(models):
        colour = COLOURS.get(model, f"C{k}")
        prefix = "" if models == ["model"] else f"{model} "
        for key, style, name, digits in ERROR_LINES:
            axis = twin if key.startswith("force") else ax
            known = [(r.iteration, r.errors[model][key]) for r in records if key in r.errors.get(model, {})]
            if known:  # iterations without the figure are skipped, not drawn as gaps
                axis.plot(*zip(*known), style, color=colour if axis is ax else "tab:gray", label=f"{prefix}{name}")
                for xi, yi in known if few else []:  # energies left of their point, forces right: no overlap
                    axis.annotate(f"{yi:.{digits}f}", (xi, yi), textcoords="offset points", fontsize=7,
                                  xytext=(-7, -3) if axis is ax else (7, -3), ha="right" if axis is ax else "left",
                                  color=colour if axis is ax else "dimgray")
    ax.set(xlabel="iteration", ylabel="energy error (meV/atom)", title="held-out errors")
    twin.set_ylabel("force RMSE (eV/Å)")
    for axis in (ax, twin):  # a little room for the values beside the points
        low, high = axis.get_ylim()
        axis.set_ylim(low - 0.08 * (high - low), high + 0.08 * (high - low))
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, fontsize=7, ncol=min(3, len(handles)), **BELOW)


def _labels_panel(ax, records: Sequence[IterationRecord], few: bool) -> None:
    """Labels in each fit (a line, left axis) and the new labels of each iteration (bars, right axis)."""
    labels = [(r.iteration, r.labels) for r in records if r.labels is not None]
    new = [(r.iteration, r.new_labels) for r in records if r.new_labels is not None]
    handles = []
    if labels:
        handles += ax.plot(*zip(*labels), "o-", color="black", label="labels in the fit (left)")
        for xi, yi in labels if few else []:
            ax.annotate(str(yi), (xi, yi), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        ax.set_ylim(0, 1.15 * max(v for _, v in labels) + 1)
    ax.set(xlabel="iteration", ylabel="labelled structures", title="labels used")
    if new:  # on their own axis: a handful of new labels next to hundreds in the fit is no bar at all
        right = ax.twinx()
        bars = right.bar(*zip(*new), width=0.5, color="tab:blue", alpha=0.45, label="new labels (right)")
        right.bar_label(bars, fontsize=8, padding=2)
        right.set_ylim(0, 2.0 * max(max(v for _, v in new), 1))  # bars in the lower half, under the line
        right.set_ylabel("new labels this iteration")
        ax.set_zorder(right.get_zorder() + 1)  # the line over the bars
        ax.patch.set_visible(False)
        handles.append(bars)
    if handles:
        ax.legend(handles=handles, labels=[h.get_label() for h in handles], fontsize=8, ncol=2, **BELOW)


def _verdicts_panel(ax, records: Sequence[IterationRecord]) -> None:
    """One row per exploration run, one mark per iteration: clean, clustered or not run."""
    runs = sorted({run for r in records for run in r.clustering})
    for r in records:
        for row, run in enumerate(runs):
            verdict = r.clustering.get(run, "missing")
            ax.scatter(r.iteration, row, s=120, marker="x" if verdict == "clustered" else "o",
                       color=VERDICT_COLOURS.get(verdict, "lightgrey"))
    for verdict, colour in {**VERDICT_COLOURS, "not run": "lightgrey"}.items():
        ax.scatter([], [], color=colour, marker="x" if verdict == "clustered" else "o", label=verdict)
    ax.set_yticks(range(len(runs)), runs)
    ax.set(xlabel="iteration", title="clustering verdicts", ylim=(-0.7, max(len(runs), 1) - 0.3))
    ax.legend(fontsize=8, ncol=3, **BELOW)
