"""PNG plots: parity (paper Fig. 3), auxiliary curves against their target, short-range curves."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from alcgap.analysis.metrics import ErrorMetrics, ParityData  # noqa: E402

COLOURS = {"composite": "tab:blue", "traditional": "tab:red", "reference": "black", "aux": "tab:green"}


def parity_plot(data: dict[str, tuple[ParityData, ErrorMetrics]], path: str | os.PathLike) -> Path:
    """Predicted against reference energies (meV/atom offsets shown in the legend) and forces."""
    has_forces = any(d.ref_forces.size for d, _ in data.values())
    fig, axes = plt.subplots(1, 2 if has_forces else 1, figsize=(10 if has_forces else 5, 4.6), squeeze=False)
    ax = axes[0, 0]
    for name, (d, m) in data.items():
        ax.scatter(d.ref_energy, d.pred_energy, s=12, alpha=0.7, color=COLOURS.get(name),
                   label=f"{name}: MAE {m.energy_mae:.2f}, RMSE {m.energy_rmse:.2f} meV/atom")
    _diagonal(ax, np.concatenate([d.ref_energy for d, _ in data.values()]))
    ax.set(xlabel="reference energy (eV/atom)", ylabel="predicted energy (eV/atom)", title="held-out energies")
    ax.legend(fontsize=8)
    if has_forces:
        ax = axes[0, 1]
        for name, (d, m) in data.items():
            ax.scatter(d.ref_forces, d.pred_forces, s=3, alpha=0.4, color=COLOURS.get(name),
                       label=f"{name}: RMSE {m.force_rmse:.3f} eV/A")
        _diagonal(ax, np.concatenate([d.ref_forces for d, _ in data.values()]))
        ax.set(xlabel="reference force component (eV/A)", ylabel="predicted (eV/A)", title="held-out forces")
        ax.legend(fontsize=8)
    return _save(fig, path)


def aux_curves_plot(curves: dict[str, dict[str, np.ndarray]], path: str | os.PathLike) -> Path:
    """Per pair: the repulsive target (scan points), the core below the scan, and the tabulated
    auxiliary, on log axes, with the cutoff and the start of the scan marked."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.4 * len(curves), 4), squeeze=False)
    for ax, (name, c) in zip(axes[0], curves.items()):
        keep = c["target"] > 0
        ax.loglog(c["r_scan"][keep], c["target"][keep], "o", ms=3, color="black", label="target (scan)")
        if len(c.get("r_core", [])):
            ax.loglog(c["r_core"], c["core"], "x", ms=3, color="grey", label="core A exp(-br)/r")
        fit_keep = c["fit"] > 0
        ax.loglog(c["r_dense"][fit_keep], c["fit"][fit_keep], "-", color=COLOURS["aux"], label="aux (table)")
        ax.axvline(c["r_cut"], ls=":", color="grey")
        if "r_scan_min" in c:
            ax.axvline(c["r_scan_min"], ls="--", lw=0.8, color="grey")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor log labels collide
        ax.set(xlabel="r (A)", ylabel="energy (eV)", title=f"{name} (r_cut {c['r_cut']} A)")
        ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def short_range_plot(curves: dict[str, dict[str, np.ndarray]], path: str | os.PathLike) -> Path:
    """Dimer binding curves of each model per pair: where the traditional GAP fails to repel."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4), squeeze=False)
    for ax, (pair, models) in zip(axes[0], curves.items()):
        r = models.pop("r")
        for name, energy in models.items():
            ax.plot(r, energy, label=name, color=COLOURS.get(name))
        models["r"] = r
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.set(xlabel="r (A)", ylabel="dimer energy (eV)", title=pair, ylim=(-20, 100))
        ax.legend(fontsize=8)
    return _save(fig, path)


def _diagonal(ax, values: np.ndarray) -> None:
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1)


def _save(fig, path: str | os.PathLike, layout: bool = True) -> Path:
    """Save and close; ``layout=False`` keeps the figure's own layout (a strip left for a figure
    legend or a suptitle, which tight_layout would undo)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
