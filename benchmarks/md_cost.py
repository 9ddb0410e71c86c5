"""Cost of MD with the composite GAP through the LAMMPS driver (fix external + quippy).

    python benchmarks/md_cost.py [--xml composite.xml] [--steps 20] [--big-steps 6]

The machine has 2 cores and is shared: the figures are CPU time of the processes measured,
which the neighbours' load does not enter; wall times and the load average are kept beside them.

(a) Driver overhead, 216 atoms (the paper's training size), one rank: CPU time per MD step
    inside LAMMPS' run commands over that of one bare force call (energy, forces, stress) on
    the same cell, as the composite ``GapCalculator`` (main GAP + tabulated aux) and as the
    main GAP's quippy ``Potential.calculate`` alone. Goal: <= 1.05. Median of interleaved rounds.
(b) Strong scaling of the MPI path, 2160 atoms (10x), measured at 1 and 2 ranks with
    ``python -m alcgap.md.task`` under this environment's ``mpiexec``; the step is split into
    QUIP compute, communication (all-gather of positions, all-reduce of forces, including the
    wait for the slower rank) and the rest (LAMMPS, Python). 16 ranks are a PROJECTION, not a
    measurement: each rank's QUIP work at p ranks is the CPU time of the masked call of each of
    the p shares of atom ids in one process (the slowest share counts, so load imbalance is
    in); communication is the collectives of one step measured alone at 2 ranks (barrier
    first), scaled by log2(p) (tree collectives; pessimistic within a node); the rest (LAMMPS,
    Python) is held at its 1-rank value.

Without ``--xml`` it fits the small composite of the test suite first (about 40 s).
Writes benchmarks/md_cost.json (beside this script, with the machine and date); the fit and the MD
runs go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from alcgap.workflow.state import read_run_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import ARTEFACTS as RESULTS, summary_path, write_summary  # noqa: E402


def fitted_xml() -> str:
    run_dir = RESULTS / "md_cost_fit"
    summary = run_dir / "summary.json"
    if not summary.exists():
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import SMALL_FIT

        from alcgap.config import load_fit_config
        from alcgap.workflow.fitjob import run_fit

        print("fitting the test suite's small composite GAP first", flush=True)
        run_fit(load_fit_config(SMALL_FIT), run_dir)
    return read_run_json(summary)["models"]["composite"]


def cell(n_atoms: int):
    from alcgap.md.protocols import scaled_cell
    from alcgap.structures import beta_cristobalite, rattled, supercell_with_atoms

    base = rattled(supercell_with_atoms(beta_cristobalite(), 216), 0.05, seed=216)
    return base if n_atoms == 216 else scaled_cell(base, n_atoms // 216)


def bare_call_seconds(calc, atoms, repeats: int) -> tuple[float, float]:
    """Median wall and CPU time of a force call (energy, forces, stress)."""
    wall, cpu = [], []
    for _ in range(repeats + 1):
        calc.reset()
        start, start_cpu = time.perf_counter(), time.process_time()
        calc.calculate(atoms.copy(), ["energy", "forces", "stress"])
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall[1:]), statistics.median(cpu[1:])  # the first call sets up descriptors


def driver_overhead(xml: str, steps: int, repeats: int, rounds: int = 3) -> dict:
    """Interleaved rounds (bare calls, driver run, ...). The machine is shared: CPU time of this
    process is the figure (the neighbours' load does not enter it); wall time is kept beside it."""
    from quippy.potential import Potential

    from alcgap.calculator import GapCalculator, component_labels
    from alcgap.md.forces import ForceField
    from alcgap.md.lammps import run_md
    from alcgap.md.protocols import nvt

    atoms = cell(216)
    composite = GapCalculator(xml)
    main = Potential(param_filename=xml, args_str=f"IP GAP label={component_labels(xml)['main']}")
    rounds_out = []
    for _ in range(rounds):
        composite_wall, composite_cpu = bare_call_seconds(composite, atoms, repeats)
        main_wall, main_cpu = bare_call_seconds(main, atoms, repeats)
        # no frames inside the loop: every step is one plain force call (variance only at step 0)
        result = run_md(atoms, ForceField.gap(xml, ["Si", "O"], backend="external"), [nvt(steps, 300.0)],
                        timestep=1.0, seed=1, sample_every=10 * steps, output_dir=RESULTS / "md_cost_216")
        t = result.timings
        rounds_out.append({
            "driver_cpu_s_per_step": t["run_cpu_s"] / steps, "driver_wall_s_per_step": t["run_s"] / steps,
            "bare_gapcalculator_cpu_s": composite_cpu, "bare_gapcalculator_wall_s": composite_wall,
            "bare_quippy_main_cpu_s": main_cpu, "bare_quippy_main_wall_s": main_wall,
            "driver_quip_cpu_s_per_call": (t["quip_cpu_s"] - t["first_call_cpu_s"]) / (t["calls"] - 1),
        })
    median = {key: statistics.median(r[key] for r in rounds_out) for key in rounds_out[0]}
    out = {
        "n_atoms": 216, "steps_per_round": steps, "rounds": rounds_out, "median": median,
        "ratio_cpu_vs_gapcalculator": median["driver_cpu_s_per_step"] / median["bare_gapcalculator_cpu_s"],
        "ratio_cpu_vs_quippy_main": median["driver_cpu_s_per_step"] / median["bare_quippy_main_cpu_s"],
        "ratio_wall_per_round_vs_gapcalculator": [r["driver_wall_s_per_step"] / r["bare_gapcalculator_wall_s"]
                                                  for r in rounds_out],
    }
    print(f"(a) 216 atoms, median of {rounds} rounds, CPU time: driver {median['driver_cpu_s_per_step'] * 1e3:.1f} ms/step; "
          f"bare GapCalculator {median['bare_gapcalculator_cpu_s'] * 1e3:.1f} ms, quippy main "
          f"{median['bare_quippy_main_cpu_s'] * 1e3:.1f} ms -> ratios {out['ratio_cpu_vs_gapcalculator']:.3f}, "
          f"{out['ratio_cpu_vs_quippy_main']:.3f}; wall-time ratios per round (shared machine): "
          f"{', '.join(f'{r:.3f}' for r in out['ratio_wall_per_round_vs_gapcalculator'])}", flush=True)
    return out


def step_split(timings: dict, steps: int) -> dict:
    """Per MD step (wall time): QUIP, communication (+ wait for the slower rank), the rest; the
    first GAP call (run 0, with QUIP's one-off set-up and the variance) is outside the loop."""
    per_step = timings["run_s"] / steps
    quip = (timings["quip_s"] - timings["first_call_s"]) / (timings["calls"] - 1)
    quip_cpu = (timings["quip_cpu_s"] - timings["first_call_cpu_s"]) / (timings["calls"] - 1)
    comm = timings["allreduce_s"] / timings["calls"] + timings["gather_s"] / timings["callbacks"]
    return {"s_per_step": per_step, "cpu_s_per_step": timings["run_cpu_s"] / steps, "quip_s": quip,
            "quip_cpu_s": quip_cpu, "comm_and_wait_s": comm, "rest_s": per_step - quip - comm}


def scaling_run(xml: str, n_ranks: int, steps: int, workdir: Path) -> dict:
    import ase.io

    from alcgap.md.forces import ForceField
    from alcgap.md.protocols import nvt
    from alcgap.md.task import MDTask, mpiexec_command

    workdir.mkdir(parents=True, exist_ok=True)
    ase.io.write(workdir / "start.xyz", cell(2160))
    task = MDTask(structure="start.xyz", force_field=ForceField.gap(xml, ["Si", "O"], backend="external"),
                  protocol=[nvt(steps, 300.0)], timestep=1.0, seed=1, sample_every=10 * steps,
                  output_dir=f"ranks-{n_ranks}")
    path = task.write(workdir / f"task-{n_ranks}.json")
    subprocess.run(mpiexec_command(path.name, n_ranks), cwd=workdir, check=True)
    result = json.loads((workdir / f"ranks-{n_ranks}" / "result.json").read_text())
    out = {"ranks": n_ranks, "steps": result["steps_done"], **step_split(result["timings"], result["steps_done"])}
    print(f"(b) 2160 atoms, {n_ranks} rank(s), wall: {out['s_per_step']:.3f} s/step = QUIP {out['quip_s']:.3f} "
          f"+ comm/wait {out['comm_and_wait_s']:.4f} + rest {out['rest_s']:.4f}; QUIP CPU per rank "
          f"{out['quip_cpu_s']:.3f} s", flush=True)
    return out


def share_seconds(xml: str, n_ranks: int, repeats: int = 2) -> float:
    """One process, CPU time: the slowest of the ``n_ranks`` masked QUIP calls (what each rank
    computes per step at ``n_ranks`` ranks)."""
    from alcgap.calculator import component_labels
    from alcgap.md.masked_gap import MASK, MaskedGap

    class OneRankOf:  # MaskedGap's share() asks only for size and rank
        def __init__(self, size, rank):
            self.size, self.rank = size, rank

    atoms = cell(2160)
    gap = MaskedGap(xml, component_labels(xml)["main"], comm=None)
    slowest = 0.0
    for rank in range(n_ranks):
        gap.comm = OneRankOf(n_ranks, rank)
        work = atoms.copy()
        work.arrays[MASK] = gap.share(len(work))
        times = []
        for _ in range(repeats):
            start = time.process_time()
            gap.potential.calculate(work, ["energy", "forces", "stress"])
            times.append(time.process_time() - start)
        slowest = max(slowest, min(times))
    return slowest


def comm_probe(n_atoms: int, repeats: int = 50) -> None:
    """Under mpiexec: the step's collectives alone, with a barrier first (no load imbalance)."""
    from alcgap.lammps_module import lammps_class

    lammps_class()
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    counts = np.array([len(part) for part in np.array_split(np.arange(n_atoms), comm.size)])
    ids = np.arange(counts[comm.rank], dtype=np.int64)
    x = np.random.default_rng(comm.rank).random((counts[comm.rank], 3))
    all_ids, all_x = np.empty(n_atoms, dtype=np.int64), np.empty((n_atoms, 3))
    buffer = np.random.default_rng(0).random(7 + 3 * n_atoms)
    spent = []
    for _ in range(repeats):
        comm.Barrier()
        start = MPI.Wtime()
        comm.allgather(int(counts[comm.rank]))
        comm.Allgatherv(ids, [all_ids, counts, MPI.INT64_T])
        comm.Allgatherv(x, [all_x, 3 * counts, MPI.DOUBLE])
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        spent.append(MPI.Wtime() - start)
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "comm_s": statistics.median(spent)}))


def projection(one: dict, comm_2: float, shares: dict, ranks: int) -> dict:
    """Per-step time at ``ranks``, and speed-up over 1 rank, both from one-core share timings
    (measured minutes apart from the MD runs, so the two are not mixed in one ratio), CPU time."""
    rest = max(0.0, one["cpu_s_per_step"] - one["quip_cpu_s"])
    comm = comm_2 * max(1.0, float(np.log2(ranks)))
    step = shares[ranks] + comm + rest
    serial = shares[1] + rest
    return {"ranks": ranks, "projected": True, "quip_s": shares[ranks], "comm_s": comm, "rest_s": rest,
            "s_per_step": step, "speedup_vs_1": serial / step, "efficiency": serial / step / ranks,
            "model": "QUIP: slowest 1/p share, CPU time in one process; comm: pure collectives at 2 ranks "
                     "x log2(p); rest (LAMMPS, Python): 1-rank CPU time per step minus QUIP's"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--xml", help="a composite GAP xml (default: fit the test suite's small one)")
    parser.add_argument("--steps", type=int, default=20, help="MD steps per round for (a)")
    parser.add_argument("--big-steps", type=int, default=6, help="MD steps per rank count for (b)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--comm-probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.comm_probe:
        comm_probe(args.comm_probe)
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    xml = str(Path(args.xml).resolve()) if args.xml else fitted_xml()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {"xml": xml, "load_average_at_start": os.getloadavg(), "cpu_count": os.cpu_count()}
    results["driver_overhead_216"] = driver_overhead(xml, args.steps, args.repeats)
    workdir = RESULTS / "md_cost_2160"
    runs = {n: scaling_run(xml, n, args.big_steps, workdir) for n in (1, 2)}
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    probe = subprocess.run([mpiexec, "-n", "2", sys.executable, __file__, "--comm-probe", "2160"],
                           capture_output=True, text=True, check=True)
    comm_2 = json.loads(probe.stdout.strip().splitlines()[-1])["comm_s"]
    shares = {p: share_seconds(xml, p) for p in (1, 2, 16)}
    results["scaling_2160"] = {
        "measured": [runs[1], runs[2]],
        "speedup_2_vs_1": runs[1]["s_per_step"] / runs[2]["s_per_step"],
        "pure_comm_s_at_2_ranks": comm_2,
        "quip_share_s_one_core": shares,
        "projection_2": projection(runs[1], comm_2, shares, 2),
        "projection_16": projection(runs[1], comm_2, shares, 16),
    }
    p2, p16 = results["scaling_2160"]["projection_2"], results["scaling_2160"]["projection_16"]
    print(f"(b) measured speedup 2 vs 1 rank: {results['scaling_2160']['speedup_2_vs_1']:.2f} (on a shared machine); "
          f"QUIP CPU per rank, one process: 1 share {shares[1]:.3f} s, 1/2 {shares[2]:.3f} s, 1/16 {shares[16]:.3f} s; "
          f"pure comm at 2 ranks {comm_2 * 1e3:.2f} ms", flush=True)
    print(f"(b) PROJECTED 2 ranks {p2['s_per_step']:.3f} s/step (speedup {p2['speedup_vs_1']:.2f}); PROJECTED 16 ranks "
          f"{p16['s_per_step']:.3f} s/step = QUIP {p16['quip_s']:.3f} + comm {p16['comm_s'] * 1e3:.2f} ms + rest "
          f"{p16['rest_s'] * 1e3:.1f} ms: speedup {p16['speedup_vs_1']:.1f}, efficiency {p16['efficiency']:.2f}", flush=True)
    results["load_average_at_end"] = os.getloadavg()
    out = write_summary(summary_path(__file__), results)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
