"""Atoms per carved cell (alcgap.explore.carve) against the frames they come from: no DFT.

    python benchmarks/carve_cost.py [--radius 4 5] [--samples 30] [--rattled]

Frames: 240 and 2160 atoms of SiO2 (beta-cristobalite x10 and x90), melted and quenched with
the Vashishta potential (1400 steps of 1 fs; ``--rattled``: the crystal rattled by 0.1 A
instead, no MD). In each frame ``--samples`` events of each kind are carved: a single atom
(a high-variance atom) and a short Si-O pair (an O pushed 0.5 A toward its Si). Reported per
frame, radius and kind: atoms per carved cell (mean, min, max), cube side, removals, carve
time, and the cube of atom counts as a stand-in for the cost of a DFT label (cubic scaling):
(N_frame / N_carved)^3, the saving over labelling the frame whole, and (N_carved / 24)^3, the
price over a 24-atom training cell. Every carved cell is checked with ``check_carved``.
Writes benchmarks/carve_cost.json (beside this script, with the machine and date).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from ase.geometry import find_mic  # noqa: E402
from matscipy.neighbours import neighbour_list  # noqa: E402

from alcgap.explore.carve import CarveSettings, carve, check_carved  # noqa: E402
from alcgap.md.protocols import Segment, scaled_cell  # noqa: E402
from alcgap.structures import beta_cristobalite, rattled  # noqa: E402
from provenance import summary_path, write_summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAINING_ATOMS = 24


def frame(factor: int, use_md: bool):
    atoms = scaled_cell(beta_cristobalite(), factor)
    if not use_md:
        return rattled(atoms, 0.1, seed=factor)
    from alcgap.md.classical import run_classical_md
    from alcgap.reference import vashishta_sio2_commands

    segments = [Segment(steps=400, t_start=300, t_end=5000), Segment(steps=400, t_start=5000, t_end=5000),
                Segment(steps=600, t_start=5000, t_end=300)]
    return run_classical_md(atoms, vashishta_sio2_commands(), ["Si", "O"], segments, timestep=1.0,
                            sample_every=1400, seed=11)[-1]


def events(atoms, samples: int, rng):
    """(kind, frame, centres): single atoms, and short Si-O pairs made by pushing an O 0.5 A in."""
    out = [("atom", atoms, [int(k)]) for k in rng.choice(len(atoms), samples, replace=False)]
    i, j = neighbour_list("ij", atoms, 1.9)
    bonds = [(int(a), int(b)) for a, b in zip(i, j) if atoms.numbers[a] == 14 and atoms.numbers[b] == 8]
    for k in rng.choice(len(bonds), samples, replace=False):
        si, o = bonds[k]
        pushed = atoms.copy()
        bond, _ = find_mic(pushed.positions[si] - pushed.positions[o], pushed.cell, pushed.pbc)
        pushed.positions[o] += 0.5 * bond / np.linalg.norm(bond)
        out.append(("pair", pushed, [si, o]))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--radius", type=float, nargs="+", default=[4.0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--rattled", action="store_true", help="rattled crystal frames instead of a Vashishta quench")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for factor in (10, 90):
        atoms = frame(factor, not args.rattled)
        cases = events(atoms, args.samples, rng)
        for radius in args.radius:
            settings = CarveSettings(radius=radius)
            for kind in ("atom", "pair"):
                sizes, sides, removed, seconds, problems = [], [], [], [], 0
                for case_kind, source, centres in cases:
                    if case_kind != kind:
                        continue
                    clock = time.perf_counter()
                    carved = carve(source, centres, settings)
                    seconds.append(time.perf_counter() - clock)
                    problems += bool(check_carved(source, carved))
                    sizes.append(len(carved))
                    sides.append(carved.info["carve_side"])
                    removed.append(carved.info["carve_removed"])
                mean = float(np.mean(sizes))
                rows.append({
                    "frame_atoms": len(atoms), "radius": radius, "event": kind, "samples": len(sizes),
                    "atoms_mean": mean, "atoms_min": int(min(sizes)), "atoms_max": int(max(sizes)),
                    "side_mean": float(np.mean(sides)), "removed_mean": float(np.mean(removed)),
                    "carve_seconds_mean": float(np.mean(seconds)), "cells_with_problems": problems,
                    "saving_vs_frame_cubed": float(np.mean([(len(atoms) / n) ** 3 for n in sizes])),
                    "price_vs_training_cubed": float(np.mean([(n / TRAINING_ATOMS) ** 3 for n in sizes])),
                })
    header = (f"{'frame':>6} {'r/A':>4} {'event':>5} {'atoms mean [min-max]':>21} {'side/A':>7} {'removed':>7} "
              f"{'(Nf/Nc)^3':>10} {'(Nc/24)^3':>10} {'ms':>6} {'bad':>4}")
    print(header)
    for row in rows:
        print(f"{row['frame_atoms']:>6} {row['radius']:>4g} {row['event']:>5} "
              f"{row['atoms_mean']:>10.1f} [{row['atoms_min']:>3}-{row['atoms_max']:>3}]    "
              f"{row['side_mean']:>7.2f} {row['removed_mean']:>7.1f} {row['saving_vs_frame_cubed']:>10.0f} "
              f"{row['price_vs_training_cubed']:>10.1f} {1e3 * row['carve_seconds_mean']:>6.0f} "
              f"{row['cells_with_problems']:>4}")
    out = write_summary(summary_path(__file__), {"frames": "rattled" if args.rattled else "vashishta quench", "rows": rows})
    print(f"written {out}")


if __name__ == "__main__":
    main()
