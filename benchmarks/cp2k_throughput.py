"""CP2K labelling throughput on this machine, and the share of wall time spent outside CP2K.

    python benchmarks/cp2k_throughput.py [--labels 3] [--omp-threads 1] [--ranks 1]

PBE with the reference's default settings (DZVP-MOLOPT-SR-GTH, GTH-PBE, 400 Ry, diagonalisation
with Broyden mixing) on beta-cristobalite SiO2 cells of 24 and 72 atoms, rattled by 0.05 A with a
different seed per label, each label a fresh ``cp2k.psmp`` process as in a campaign.

Per label three clocks: our wall time around ``Cp2kReference.compute`` (input writing, process
start, CP2K, parsing), the wall time of the CP2K process alone, and CP2K's own total from its
timing report (line ``CP2K`` of the T I M I N G table). Outside-CP2K share = 1 - CP2K's own time /
our wall time; it splits into our Python (compute minus the process) and the process start and
end that CP2K's timer does not see (MPI start-up, reading libraries, tear-down).
Goal: less than 2% outside CP2K. Writes benchmarks/cp2k_throughput.json (beside this script, with
the machine and date).
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import summary_path, write_summary  # noqa: E402


def measure_cell(reference, n_atoms: int, labels: int) -> dict:
    from alcgap.structures import beta_cristobalite, rattled, supercell_with_atoms

    rows = []
    for seed in range(labels):
        atoms = rattled(supercell_with_atoms(beta_cristobalite(), n_atoms), 0.05, seed=1000 * n_atoms + seed)
        start = time.perf_counter()
        label = reference.compute(atoms)
        wall = time.perf_counter() - start
        if not label.ok:
            raise RuntimeError(f"{n_atoms} atoms, seed {seed}: {label.status.value}: {label.reason}")
        out = (Path(label.info["directory"]) / "cp2k.out").read_text()
        steps = [int(n) for n in re.findall(r"SCF run converged in\s+(\d+) steps", out)]
        row = {
            "wall_s": wall,
            "process_s": label.info["run_seconds"],
            "cp2k_s": label.info["cp2k_seconds"],
            "scf_steps": sum(steps),
            "directory": label.info["directory"],
        }
        rows.append(row)
        print(f"  {n_atoms:3d} atoms, label {seed + 1}/{labels}: wall {wall:7.2f} s, process {row['process_s']:7.2f} s, "
              f"CP2K {row['cp2k_s']:7.2f} s, {row['scf_steps']} SCF steps", flush=True)
    wall = sum(r["wall_s"] for r in rows)
    cp2k = sum(r["cp2k_s"] for r in rows)
    process = sum(r["process_s"] for r in rows)
    return {
        "n_atoms": n_atoms,
        "labels": rows,
        "median_wall_s": statistics.median(r["wall_s"] for r in rows),
        "labels_per_hour": 3600.0 * len(rows) / wall,
        "outside_cp2k_fraction": 1.0 - cp2k / wall,
        "python_fraction": (wall - process) / wall,
        "process_start_end_fraction": (process - cp2k) / wall,
        "python_ms_per_label": 1000.0 * (wall - process) / len(rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=3, help="labels per cell")
    parser.add_argument("--cells", type=int, nargs="+", default=[24, 72], help="cell sizes (atoms, multiples of 24)")
    parser.add_argument("--omp-threads", type=int, default=1)
    parser.add_argument("--ranks", type=int, default=1, help=">1 runs under Debian's OpenMPI launcher")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "bench-cp2k-throughput"))
    parser.add_argument("--out", default=str(summary_path(__file__)), help="summary JSON (default: beside this script)")
    args = parser.parse_args()

    from alcgap.reference import Cp2kReference, Cp2kSettings

    launch = ["/usr/bin/mpiexec.openmpi", "-n", str(args.ranks)] if args.ranks > 1 else []
    settings = Cp2kSettings(omp_threads=args.omp_threads, launch_prefix=launch)
    reference = Cp2kReference(settings, ["Si", "O"], workdir=args.workdir)
    try:
        with open("/proc/loadavg") as f:
            load_before = f.read().split()[:3]
    except OSError:
        load_before = None
    results = {
        "settings": reference.settings(),
        "omp_threads": args.omp_threads,
        "ranks": args.ranks,
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform(), "loadavg_before": load_before},
        "cells": {},
    }
    print(f"CP2K PBE labels, {args.ranks} rank(s) x {args.omp_threads} thread(s), {args.labels} labels per cell", flush=True)
    for n_atoms in args.cells:
        results["cells"][str(n_atoms)] = measure_cell(reference, n_atoms, args.labels)
    try:
        with open("/proc/loadavg") as f:
            results["machine"]["loadavg_after"] = f.read().split()[:3]
    except OSError:
        pass

    print()
    print(f"{'atoms':>5} {'labels/h':>9} {'median s':>9} {'outside CP2K':>13} {'our Python':>11} {'start/end':>10} {'Python ms':>10}")
    for cell in results["cells"].values():
        print(f"{cell['n_atoms']:5d} {cell['labels_per_hour']:9.1f} {cell['median_wall_s']:9.2f} "
              f"{100 * cell['outside_cp2k_fraction']:12.2f}% {100 * cell['python_fraction']:10.3f}% "
              f"{100 * cell['process_start_end_fraction']:9.2f}% {cell['python_ms_per_label']:10.1f}")
    out = write_summary(args.out, results)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
