"""Per-atom SOAP distances in real MD: what separates "the same event a few frames later" from
distinct environments, and so the duplicate rules of alcgap.explore.select.

    OMP_NUM_THREADS=1 python benchmarks/select_threshold.py      (about a minute)

Real MD through the package's driver (alcgap.md.lammps.run_md via run_classical_md) with the
Vashishta SiO2 potential shipped with LAMMPS: 240 atoms (24-atom beta-cristobalite x 10,
scaled_cell), NVT (Nose-Hoover), 1 fs steps, a frame every 10 fs; 1 ps to equilibrate (frames
dropped), then 2 ps kept; at 4000 K (the exploration melt) and 1500 K. Per-atom SOAP as
alcgap.explore.select computes it (SelectionSettings defaults), distance = 1 - cosine similarity.

Measured per species: the same atom 10, 20, 50, 100, 500 fs later; different atoms of the same
frame; each atom's nearest other atom of its frame; and the flagged atoms alone (those with a
pair under the test suite's flag distances Si-O 1.4, O-O 2.2, Si-Si 2.6 A, i.e.
short_pair_ratio < 1), 10 and 20 fs later; and the nearest of the 800 Si / 1600 O environments
of 10 frames 0.5-1 ps later (what a training set of that run would offer), for every atom and for
the flagged ones. Then the fractions below a few thresholds, and the
selection itself on the 4000 K run with and without the same-event time rule.

Writes benchmarks/select_threshold.json (beside this script, with the machine and date).
"""

from __future__ import annotations

import os
import time

import numpy as np
from ase.neighborlist import neighbor_list

from alcgap.md.classical import run_classical_md
from alcgap.md.protocols import nvt, scaled_cell
from alcgap.reference import vashishta_sio2_commands
from alcgap.explore.select import MIN_DISTANCE, SelectionSettings, per_atom_soap, select_environments
from alcgap.structures import beta_cristobalite

from provenance import summary_path, write_summary

SUMMARY = summary_path(__file__)
SPECIES = ["Si", "O"]
FLAG = {("O", "Si"): 1.4, ("Si", "O"): 1.4, ("O", "O"): 2.2, ("Si", "Si"): 2.6}
EVERY_FS, EQUILIBRATE_FS, KEEP_FS = 10, 1000, 2000
LAGS_FS = (10, 20, 50, 100, 500)
THRESHOLDS = (5e-4, 1e-3, 2e-3, 5e-3, 1e-2)
PERCENTILES = (5, 50, 95)


def trajectory(temperature: float, seed: int):
    frames = run_classical_md(scaled_cell(beta_cristobalite(), 10), vashishta_sio2_commands(), SPECIES,
                              [nvt(EQUILIBRATE_FS + KEEP_FS, temperature)], timestep=1.0,
                              sample_every=EVERY_FS, seed=seed)
    frames = frames[EQUILIBRATE_FS // EVERY_FS:]
    for frame in frames:
        frame.info["task"] = f"vashishta-{temperature:g}K"
        frame.arrays["short_pair_ratio"] = pair_ratio(frame)
    return frames


def pair_ratio(frame) -> np.ndarray:
    i, j, d = neighbor_list("ijd", frame, 3.0)
    symbols = np.array(frame.get_chemical_symbols())
    limit = np.array([FLAG[(a, b)] for a, b in zip(symbols[i], symbols[j])])
    ratio = np.full(len(frame), np.inf)
    np.minimum.at(ratio, i, d / limit)
    return ratio


def summary(values: np.ndarray) -> dict:
    values = np.asarray(values)
    if not values.size:
        return {**{f"p{p}": float("nan") for p in PERCENTILES}, "n": 0, "below": {f"{t:g}": float("nan") for t in THRESHOLDS}}
    out = {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}
    out["n"] = int(values.size)
    out["below"] = {f"{t:g}": float(np.mean(values < t)) for t in THRESHOLDS}
    return out


def distances(frames, settings) -> dict:
    vectors = per_atom_soap(frames, SPECIES, settings).reshape(len(frames), len(frames[0]), -1)
    z = frames[0].numbers
    flagged = np.array([f.arrays["short_pair_ratio"] < 1.0 for f in frames])
    out = {}
    for symbol, number in (("Si", 14), ("O", 8)):
        mine = z == number
        rows = {}
        for lag_fs in LAGS_FS:
            lag = lag_fs // EVERY_FS
            same = 1.0 - np.einsum("tnd,tnd->tn", vectors[:-lag], vectors[lag:])
            rows[f"same atom {lag_fs} fs"] = summary(same[:, mine])
            if lag_fs <= 20:
                rows[f"flagged atom {lag_fs} fs"] = summary(same[flagged[:-lag] & mine[None]])
        pairs, nearest = [], []
        for t in range(0, len(frames), 20):  # every 200 fs
            block = vectors[t][mine]
            d = 1.0 - block @ block.T
            np.fill_diagonal(d, np.inf)
            pairs.append(d[np.triu_indices(len(block), 1)])
            nearest.append(d.min(axis=1))
        rows["different atoms"] = summary(np.concatenate(pairs))
        rows["nearest other atom"] = summary(np.concatenate(nearest))
        # as a training set would see it: every atom of 10 frames 0.5-1 ps after the first 1 ps
        pool = vectors[150:200:5][:, mine].reshape(-1, vectors.shape[-1])
        first = vectors[:100][:, mine]
        rows["nearest of 10 frames"] = summary(1.0 - (first.reshape(-1, first.shape[-1]) @ pool.T).max(axis=1))
        if flagged[:100][:, mine].any():
            rows["flagged, nearest of 10"] = summary(1.0 - (first[flagged[:100][:, mine]] @ pool.T).max(axis=1))
        out[symbol] = rows
    return out


def selection(frames, same_event_steps: int) -> dict:
    """Every flagged atom of 1 ps of the run as a candidate, unlimited budget."""
    settings = SelectionSettings(budget=10_000, same_event_steps=same_event_steps)
    picked = select_environments(frames[:100], SPECIES, settings)
    step = [frames[e.frame].info["md_step"] for e in picked.events]
    # events whose chosen atom is a centre of an event chosen before them, 10-20 fs away
    repeats = sum(1 for k, e in enumerate(picked.events) if any(
        e.centres[0] in earlier.centres and 0 < abs(step[m] - step[k]) <= 20 for m, earlier in enumerate(picked.events[:k])))
    return {"same_event_steps": same_event_steps, "flagged_atoms": picked.n_candidates, "events": len(picked.events),
            "merged": picked.n_merged, "duplicates": picked.n_duplicates, "repeats_of_an_event_10_20_fs_before": repeats}


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    clock = time.perf_counter()
    settings = SelectionSettings()
    results = {"min_distance": MIN_DISTANCE, "metric": "1 - cosine similarity of L2-normalised per-atom SOAP",
               "soap": {"n_max": settings.soap_n_max, "l_max": settings.soap_l_max, "cutoff": settings.soap_cutoff,
                        "atom_sigma": settings.soap_atom_sigma},
               "md": {"atoms": 240, "potential": "Vashishta SiO2 (LAMMPS)", "ensemble": "NVT", "timestep_fs": 1.0,
                      "frame_every_fs": EVERY_FS, "equilibrate_fs": EQUILIBRATE_FS, "kept_fs": KEEP_FS},
               "temperatures": {}}
    for temperature, seed in ((4000.0, 3), (1500.0, 4)):
        frames = trajectory(temperature, seed)
        entry = {"distances": distances(frames, settings),
                 "flagged_atoms_per_frame": float(np.mean([(f.arrays["short_pair_ratio"] < 1).sum() for f in frames]))}
        if temperature == 4000.0:
            entry["selection"] = [selection(frames, 0), selection(frames, settings.same_event_steps)]
        results["temperatures"][f"{temperature:g}"] = entry
    results["wall_s"] = round(time.perf_counter() - clock, 1)
    write_summary(SUMMARY, results)

    shown = ("5e-4", "0.001", "0.002", "0.005", "0.01")
    head = f"{'T/K':>5} {'sp':>2} {'pair of environments':<23} {'p5':>8} {'median':>8} {'p95':>8}  " + \
        " ".join(f"<{t:>6}" for t in shown) + "   (fraction below)"
    print(head)
    for temperature, entry in results["temperatures"].items():
        for symbol, rows in entry["distances"].items():
            for name, row in rows.items():
                below = " ".join(f"{row['below'][f'{t:g}']:7.3f}" for t in THRESHOLDS)
                print(f"{temperature:>5} {symbol:>2} {name:<23} {row['p5']:8.1e} {row['p50']:8.1e} {row['p95']:8.1e}  {below}")
        print(f"{temperature:>5}    flagged atoms per frame: {entry['flagged_atoms_per_frame']:.2f}")
    for row in results["temperatures"]["4000"]["selection"]:
        print(f"4000 K selection, same_event_steps={row['same_event_steps']:>2}: {row['flagged_atoms']} flagged atoms -> "
              f"{row['events']} events ({row['repeats_of_an_event_10_20_fs_before']} repeat an event 10-20 fs before), "
              f"{row['merged']} merged, {row['duplicates']} duplicates")
    print(f"min_distance = {MIN_DISTANCE:g}; {results['wall_s']} s; written {SUMMARY}")


if __name__ == "__main__":
    main()
