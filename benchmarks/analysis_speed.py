"""Cost of the structure analysis of a trajectory relative to reading it, in one run.

    python benchmarks/analysis_speed.py [--frames 100] [--atoms 2160] [--repeats 3]

The trajectory: beta-cristobalite SiO2, the most cubic supercell of 2160 atoms (10x the paper's
training cells), each frame independently rattled by 0.04 A (uncorrelated rattles stretch bonds
more than thermal motion does: 0.04 A already gives Si-O a 0.057 A spread, about that of a
300 K glass), written as plain extxyz (species, positions, cell, like our MD frames). The read is
``ase.io.read(path, index=":")``; the analysis is ``analyse_trajectory`` on the frames read:
partial RDFs to 6 A in 0.02 A bins averaged over frames, coordination and a clustering verdict
for every frame, all from one neighbour list per frame. Calls are interleaved (read, analysis,
analysis without the Verlet skin, read, ...) so drifts of the shared machine hit all alike; the
figures are medians. Goal: analysis at most 2x the read.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import ase.io

from provenance import ARTEFACTS, summary_path, write_summary

ROOT = Path(__file__).resolve().parents[1]


def write_trajectory(path: Path, n_atoms: int, n_frames: int, stdev: float = 0.04) -> None:
    from alcgap.structures import beta_cristobalite, rattled, supercell_with_atoms

    base = supercell_with_atoms(beta_cristobalite(), n_atoms)
    base.info.clear()
    del base.arrays["spacegroup_kinds"]  # an artefact of ase.spacegroup, not in MD frames
    frames = [rattled(base, stdev, seed) for seed in range(n_frames)]
    for frame in frames:
        frame.wrap()
    ase.io.write(path, frames, format="extxyz")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atoms", type=int, default=2160)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(summary_path(__file__)), help="summary JSON (default: beside this script)")
    parser.add_argument("--keep", action="store_true", help="keep the generated trajectory file")
    args = parser.parse_args()

    from alcgap.analysis.clustering import analyse_trajectory

    out = Path(args.out)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"sio2-{args.atoms}x{args.frames}.xyz"
    write_trajectory(path, args.atoms, args.frames)

    times: dict[str, list[float]] = {"read": [], "analysis": [], "analysis_no_skin": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        frames = ase.io.read(path, index=":")
        times["read"].append(time.perf_counter() - start)
        for name, skin in (("analysis", 1.5), ("analysis_no_skin", 0.0)):
            start = time.perf_counter()
            result = analyse_trajectory(frames, skin=skin)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    results = {
        "n_atoms": args.atoms, "n_frames": args.frames, "repeats": args.repeats,
        "file_MB": round(path.stat().st_size / 2**20, 2),
        "analysis": "RDF r_max 6.0 A, bin 0.02 A; coordination and SiO2 clustering verdict per frame",
        "median_s": {name: round(value, 4) for name, value in median.items()},
        "all_s": {name: [round(v, 4) for v in values] for name, values in times.items()},
        "ratio_analysis_to_read": round(median["analysis"] / median["read"], 3),
        "ratio_no_skin_to_read": round(median["analysis_no_skin"] / median["read"], 3),
        "goal_ratio": 2.0,
        "verdict_of_trajectory": result.verdict,
        "clustered_frames": sum(not v.clean for v in result.verdicts),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }
    results["meets_goal"] = results["ratio_analysis_to_read"] <= results["goal_ratio"]
    write_summary(out, results)
    if not args.keep:
        path.unlink()
    print(f"read {median['read']:.3f} s, analysis {median['analysis']:.3f} s "
          f"(without Verlet skin {median['analysis_no_skin']:.3f} s) for {args.frames} frames of {args.atoms} atoms")
    print(f"analysis / read = {results['ratio_analysis_to_read']:.2f} (goal <= 2.0; "
          f"{results['ratio_no_skin_to_read']:.2f} without the skin) -> {out}")
    return 0 if results["meets_goal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
