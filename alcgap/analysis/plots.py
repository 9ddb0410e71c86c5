"""PNG plots: parity (paper Fig. 3), auxiliary curves against their target, short-range curves,
partial RDFs (Fig. 4e) and VDOS (Fig. 5a)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from alcgap.analysis.metrics import ErrorMetrics, ParityData  # noqa: E402
from alcgap.analysis.rdf import PartialRDF  # noqa: E402
from alcgap.analysis.vdos import VDOS, vdos_similarity  # noqa: E402
from alcgap.structures import pair_name  # noqa: E402

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


def rdf_plot(rdfs: Mapping[str, PartialRDF], path: str | os.PathLike, reference: str | None = "reference",
             title: str = "") -> Path:
    """Partial RDFs of several structures, one panel per species pair; ``reference`` in black (Fig. 4e)."""
    pairs = list(dict.fromkeys(p for rdf in rdfs.values() for p in rdf.g))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.8), squeeze=False)
    for ax, pair in zip(axes[0], pairs):
        for k, (name, rdf) in enumerate(rdfs.items()):
            if pair in rdf.g:
                is_ref = name == reference
                ax.plot(rdf.r, rdf.g[pair], lw=1.6 if is_ref else 1.1, ls="--" if is_ref else "-", label=name,
                        color="black" if is_ref else COLOURS.get(name, f"C{k}"))
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set(xlabel="r (A)", ylabel="g(r)", title=f"{pair_name(pair)} {title}".strip())
        ax.legend(fontsize=8)
    return _save(fig, path)


def run_rdf_panel(runs: Mapping[str, PartialRDF], path: str | os.PathLike, reference: PartialRDF | None = None,
                  headings: Mapping[str, str] | None = None, distances: Mapping[str, Mapping[str, float]] | None = None,
                  colours: Mapping[str, str] | None = None, title: str = "") -> Path:
    """One row per exploration run, one column per species pair: the run's partial RDF against
    the reference's (black, dashed), on one g(r) scale per pair so rows compare at a glance.

    ``headings``: a line over each run's row (its verdict, frames); ``distances``: run -> pair
    name -> RDF distance, shown in the panel's title; ``colours``: run -> colour of its heading.
    The legend sits above the panels, never over a curve."""
    headings, distances, colours = headings or {}, distances or {}, colours or {}
    pairs = list(dict.fromkeys(p for rdf in [*runs.values(), *([reference] if reference else [])] for p in rdf.g))
    if not runs or not pairs:
        raise ValueError("no RDF to draw")
    top = {p: max(float(np.max(rdf.g[p])) for rdf in [*runs.values(), *([reference] if reference else [])]
                  if p in rdf.g) for p in pairs}
    r_max = max(float(rdf.r_max) for rdf in runs.values())
    fig = plt.figure(figsize=(4.3 * len(pairs), 2.75 * len(runs) + 0.9), layout="constrained")
    rows = fig.subfigures(len(runs), 1, squeeze=False)[:, 0]
    handles = {}
    for row, (name, rdf) in zip(rows, runs.items()):
        axes = row.subplots(1, len(pairs), squeeze=False)[0]
        row.suptitle(headings.get(name, name), x=0.01, ha="left", fontsize=10, color=colours.get(name, "black"),
                     fontweight="bold")
        for ax, pair in zip(axes, pairs):
            if reference is not None and pair in reference.g:
                handles["reference"] = ax.plot(reference.r, reference.g[pair], "--", color="black", lw=1.4)[0]
            if pair in rdf.g:
                handles["this run's final frames"] = ax.plot(rdf.r, rdf.g[pair], "-", color="tab:blue", lw=1.2)[0]
            ax.axhline(1.0, color="grey", lw=0.5)
            distance = distances.get(name, {}).get(pair_name(pair))
            ax.set(xlim=(0.0, r_max), ylim=(0.0, 1.08 * max(top[pair], 1.2)), xlabel="r (Å)", ylabel="g(r)",
                   title=pair_name(pair) + (f": distance {distance:.3f}" if distance is not None else ""))
            ax.title.set_fontsize(9)
    fig.legend(list(handles.values()), list(handles), loc="outside upper center", ncol=len(handles), fontsize=9,
               frameon=False, title=title or None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def vdos_plot(curves: Mapping[str, VDOS], path: str | os.PathLike, reference: str | None = "reference",
              e_max: float | None = None) -> Path:
    """VDOS curves (1/meV against meV), ``reference`` in black; the legend gives each one's similarity
    to the reference (over [0, e_max] meV when given) (Fig. 5a)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ref = curves.get(reference) if reference else None
    for k, (name, curve) in enumerate(curves.items()):
        label = name
        if ref is not None and name != reference:
            label += f" (similarity {vdos_similarity(ref, curve):.3f}"
            label += f", {vdos_similarity(ref, curve, e_max):.3f} below {e_max:g} meV)" if e_max else ")"
        colour = "black" if name == reference else COLOURS.get(name, f"C{k}")
        ax.plot(curve.energy, curve.dos, label=label, color=colour)
    if e_max is not None:
        ax.axvline(e_max, color="grey", ls=":", lw=0.8)
    ax.set(xlabel="phonon energy (meV)", ylabel="VDOS (1/meV)", title="vibrational density of states")
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
