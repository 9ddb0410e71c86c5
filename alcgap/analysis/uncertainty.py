"""The predicted variance as a flag: calibrated on the model, and checked against real errors.

Calibration (``explore.variance_threshold: auto``). The scale of GAP's predicted variance
depends on delta, the sparse set and the regularisation, so an absolute eV^2 threshold copied
from one model is noise on another. The threshold is set per model, per atom::

    threshold = variance_factor x quantile(per-atom variance over the held-out bootstrap atoms,
                                           variance_quantile)

with defaults 2 x the 99th percentile: the ordinary material, which the model has not been
trained on. Not the training atoms: with few frames, most training atoms are sparse points and
their variance is ~0 (seen: 12 xTB frames, 200 sparse points, q99 6e-6 eV^2, so the threshold
flagged the crystal start at 5.5e-4). It is per atom, so it does not grow with the cell: a 10x
cell of the same material flags no more atoms per atom than the training cell. Measured on the
quick Vashishta SiO2 fit (24 atoms, 42 training frames, ``configs/sio2-fit-quick.yaml``):
held-out atoms q50 5.5e-4, q99 1.4e-2, max 2.0e-2 eV^2; the perfect crystal 2.7e-3 at 24 and
at 240 atoms, 10x below the threshold 2.8e-2.

Check. Each iteration compares, on the frames it chose and then labelled, the model's per-atom
force error with its predicted per-atom variance: a Spearman rank correlation and a scatter plot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from alcgap.analysis.calibration import variance_and_errors
from alcgap.provenance import centre_atoms, exact_atoms


def per_atom_variance(calc, frames: Sequence[Atoms]) -> np.ndarray:
    """Per-atom predicted variance (eV^2) of every atom of ``frames``, concatenated."""
    out = []
    for atoms in frames:
        work = atoms.copy()
        work.calc = calc
        out.append(np.asarray(calc.get_variance(work)))
    return np.concatenate(out) if out else np.empty(0)


def calibrate_variance(calc, frames: Sequence[Atoms], quantile: float = 0.99, factor: float = 2.0) -> dict:
    """The per-atom variance threshold of a model from held-out frames of the ordinary material (eV^2)."""
    if not frames:
        raise ValueError("no held-out frames to calibrate the variance threshold on")
    variance = per_atom_variance(calc, frames)
    q = float(np.quantile(variance, quantile))
    return {"threshold": factor * q, "quantile": quantile, "factor": factor, "quantile_value": q,
            "median": float(np.median(variance)), "max": float(variance.max()), "n_atoms": int(variance.size)}


def variance_vs_error(calc, labelled: Sequence[Atoms]) -> dict:
    """Per-atom force error |F_model - F_ref| against predicted variance on labelled frames.

    Returns the Spearman rank correlation (None for fewer than 3 atoms or without forces) and
    the per-atom arrays for a plot."""
    from scipy.stats import spearmanr  # scipy.stats: slow to import, needed only here

    variance, vectors = variance_and_errors(calc, labelled)
    if not len(variance):
        return {"spearman": None, "n_atoms": 0, "variance": [], "force_error": []}
    error = np.linalg.norm(vectors, axis=1)
    rho = float(spearmanr(variance, error).statistic) if len(error) >= 3 else None
    return {"spearman": rho, "n_atoms": int(len(error)), "variance": variance.tolist(), "force_error": error.tolist()}


def variance_error_plot(data: dict, threshold: float | None, path: str | os.PathLike, title: str = "") -> Path:
    """Per-atom force error against predicted variance (log-log), with the flag threshold."""
    from alcgap.analysis.plots import _save, plt  # matplotlib: only when a plot is drawn

    fig, ax = plt.subplots(figsize=(5.4, 4.4))
    variance, error = np.asarray(data["variance"]), np.asarray(data["force_error"])
    if variance.size:
        ax.scatter(np.maximum(variance, 1e-12), np.maximum(error, 1e-6), s=6, alpha=0.5, color="tab:blue",
                   label=f"{variance.size} atoms, Spearman {data['spearman']:.2f}" if data["spearman"] is not None else None)
    if threshold:
        ax.axvline(threshold, color="tab:red", ls="--", lw=1, label=f"flag threshold {threshold:.3g} eV$^2$")
    ax.set(xscale="log", yscale="log", xlabel="predicted variance (eV$^2$)", ylabel="|force error| (eV/A)",
           title=title or "variance against error on the selected frames")
    ax.legend(fontsize=8)
    return _save(fig, path)


def centre_force_errors(calc, labelled: Sequence[Atoms]) -> dict:
    """Force errors on the atoms each frame was selected for, and every force error relative to
    the reference forces' RMS on the same atoms.

    - ``centre_*``: the flagged atoms (``info["centre_atoms"]``).
    - ``core_*``: the atoms at the explored frame's geometry (:func:`alcgap.explore.carve.exact_atoms`):
      in a carved cell the event and its surroundings, without the boundary the carve added
      and then relaxed. That relaxation is done by the model being measured, so on the relaxed
      atoms its forces are ~0 by construction and the cell's energy is at its own minimum: the
      all-atom force and the energy figures of a relaxed carved cell are biased against it. The
      core figure is not, and it is the prospective error the campaign reports first.

    The relative figures (error RMS / reference RMS) compare iterations whose frames are of
    different hardness: the frames a later model gets wrong can be contacts with 5x the forces
    of the first model's (seen in the xTB demo: centre reference forces 3 eV/A RMS in iteration
    1, 18 eV/A in iteration 2)."""
    parts: dict[str, tuple[list, list]] = {"": ([], []), "centre_": ([], []), "core_": ([], [])}
    for atoms in labelled:
        if atoms.calc is None or "forces" not in atoms.calc.results:
            continue
        work = atoms.copy()
        work.calc = calc
        ref = np.asarray(atoms.calc.results["forces"])
        error = work.get_forces() - ref
        for prefix, chosen in (("", slice(None)), ("centre_", centre_atoms(atoms)), ("core_", exact_atoms(atoms))):
            if isinstance(chosen, slice) or chosen:
                parts[prefix][0].append(error[chosen].reshape(-1, 3))
                parts[prefix][1].append(ref[chosen].reshape(-1, 3))
    out = {"centre_force_rmse": None, "n_centres": 0, "centre_force_relative": None, "force_relative": None,
           "core_force_rmse": None, "n_core": 0, "core_force_relative": None}
    for prefix, (errors, reference) in parts.items():
        if not errors:
            continue
        error, ref = np.concatenate(errors), np.concatenate(reference)
        rmse, ref_rms = float(np.sqrt(np.mean(error ** 2))), float(np.sqrt(np.mean(ref ** 2)))
        out[f"{prefix}force_relative"] = rmse / max(ref_rms, 1e-12)
        out[f"{prefix}force_rms_reference"] = ref_rms
        if prefix:
            out[f"{prefix}force_rmse"] = rmse
            out["n_centres" if prefix == "centre_" else "n_core"] = int(len(error))
    return out
