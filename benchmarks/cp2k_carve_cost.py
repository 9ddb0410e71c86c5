"""CP2K cost of a label: carved cells from a 10x frame against the whole frame.

    nice -n 10 python benchmarks/cp2k_carve_cost.py [--samples 3] [--ranks 1] [--workdir DIR]

Reference: CP2K GFN1-xTB exactly as ``configs/sio2-quick.yaml`` sets it up (its ``reference``
section, loaded with ``alcgap.config``, run through ``alcgap.reference.Cp2kReference``), the
same settings and ranks for every label. Frame: SiO2 beta-cristobalite x10 (240 atoms), melted
and quenched with the Vashishta potential (``benchmarks/carve_cost.py``'s frame, 1400 steps).
Carved cells: ``--samples`` single-atom events and ``--samples`` short Si-O pairs (an O pushed
0.5 A toward its Si, as a flagged pair looks), each carved by ``alcgap.explore.carve.carve`` with the
config's carving radius (``label.carve_radius``, default the SOAP cutoff), as the campaign's
selection carves them, then their boundary relaxed as the campaign relaxes it (atoms beyond the
default frozen radius, the carving radius less 1 A; the Vashishta potential stands in for the
explored model; ``--as-cut`` skips it). Then the whole 240-atom frame, once.

Measured per label: atoms, wall seconds (the whole ``compute``: CP2K start-up, SCF, any SCF
recovery rung), CP2K's own timer, SCF steps (from ``cp2k.out``), status. Reported: the ratio
whole / mean carved, and for 2160-atom frames (the paper's 10x of 216 atoms) a PROJECTION,
not a measurement: the whole frame's time scaled by (2160/240)^3 (cubic scaling), against the
same carved cells (the carving radius, not the frame, sets their size); alongside it the power
law fitted through the measured points, to show how far from cubic the small cells are.
Writes benchmarks/cp2k_carve_cost.json (beside this script, with the machine and date).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from carve_cost import events, frame  # noqa: E402  (the 240-atom Vashishta frame and its events)
from provenance import summary_path, write_summary  # noqa: E402

from alcgap.explore.carve import CarveSettings, carve, relax_boundary  # noqa: E402
from alcgap.config import load_campaign_config  # noqa: E402
from alcgap.reference import LammpsReference, make_reference  # noqa: E402
from alcgap.workflow.stages.explore import pick_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sio2-quick.yaml"
PROJECTED_ATOMS = 2160
_SCF = re.compile(r"\*\*\* SCF run converged in\s+(\d+) steps")
#: OT: the outer loop's total, converged or not
_OUTER = re.compile(r"outer SCF loop (?:converged in|FAILED to converge after)\s+\d+ iterations or\s+(\d+) steps")


def scf_steps(output: str) -> int | None:
    """SCF steps of one run: the outer loop's total with OT (converged or failed), else the inner count."""
    outer = _OUTER.findall(output)
    if outer:
        return int(outer[-1])
    inner = _SCF.findall(output)
    return int(inner[-1]) if inner else None


def attempts(directory: Path) -> list[dict]:
    """Every CP2K run of one label: the first and each SCF recovery rung (``rung-*`` folders)."""
    from alcgap.reference import parse_cp2k_output

    runs = []
    for out in sorted(directory.rglob("cp2k.out"), key=lambda path: len(path.parts)):
        text = out.read_text(errors="replace")
        runs.append({"run": str(out.parent.relative_to(directory)), "scf_steps": scf_steps(text),
                     "cp2k_seconds": parse_cp2k_output(text).cp2k_seconds,
                     "converged": "SCF run NOT converged" not in text and "FAILED to converge" not in text})
    return runs


def label_cost(reference, atoms, kind: str) -> dict:
    clock = time.perf_counter()
    label = reference.compute(atoms)
    wall = time.perf_counter() - clock
    runs = attempts(Path(label.info["directory"])) if label.info.get("directory") else []
    final = runs[-1] if runs else {}
    return {"kind": kind, "atoms": len(atoms), "wall_seconds": wall, "status": label.status.value,
            "recovered_by": label.info.get("recovered_by"), "cp2k_runs": len(runs),
            "scf_steps_total": sum(r["scf_steps"] or 0 for r in runs),
            "cp2k_seconds_total": sum(r["cp2k_seconds"] or 0.0 for r in runs),
            # the run that gave the label: its time per SCF step is the size-dependent part
            "final_scf_steps": final.get("scf_steps"), "final_cp2k_seconds": final.get("cp2k_seconds"),
            "runs": runs, "directory": label.info.get("directory")}


def power_law(sizes, values) -> tuple[float, float]:
    """(prefactor, exponent) of value = a * atoms^b, least squares in log-log."""
    exponent, log_a = np.polyfit(np.log(sizes), np.log(values), 1)
    return float(np.exp(log_a)), float(exponent)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3, help="events of each kind (atom, pair) to carve and label")
    parser.add_argument("--ranks", type=int, default=1, help="MPI ranks of every CP2K call (OpenMPI /usr/bin/mpiexec)")
    parser.add_argument("--walltime", type=float, default=1800.0,
                        help="seconds allowed per CP2K call (how long, not what is computed; the config's 600 s "
                             "is tight for 240 atoms on a shared core)")
    parser.add_argument("--as-cut", action="store_true", help="label the carved cells as cut, boundary not relaxed")
    parser.add_argument("--workdir", default=None, help="where CP2K runs keep their files (default: a new temp dir)")
    args = parser.parse_args()
    config = load_campaign_config(CONFIG)
    settings = config.reference.model_copy(update={"walltime": max(args.walltime, config.reference.walltime)})
    if args.ranks > 1:
        settings = settings.model_copy(update={"launch_prefix": ["/usr/bin/mpiexec", "--oversubscribe", "-n", str(args.ranks)]})
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="alcgap-cp2k-carve-"))
    reference = make_reference(settings, config.species, workdir)
    radius = config.label.carve_radius or config.main.soap.cutoff
    relaxer = LammpsReference.vashishta_sio2().calculator()
    load_before = os.getloadavg()

    source = frame(10, True)
    cases = events(source, args.samples, np.random.default_rng(0))
    rows = []
    for kind, atoms, centres in cases:
        cell = carve(atoms, centres, CarveSettings(radius=radius))
        if not args.as_cut:
            cell = relax_boundary(atoms, cell, relaxer, pick_settings(config).frozen_radius)
        rows.append(label_cost(reference, cell, f"carved-{kind}"))
        print(f"  {rows[-1]['kind']:>13} {rows[-1]['atoms']:>4} atoms {rows[-1]['wall_seconds']:8.1f} s "
              f"scf {rows[-1]['scf_steps_total']} in {rows[-1]['cp2k_runs']} run(s) {rows[-1]['status']}", flush=True)
    whole = label_cost(reference, source, "whole")
    print(f"  {'whole':>13} {whole['atoms']:>4} atoms {whole['wall_seconds']:8.1f} s "
          f"scf {whole['scf_steps_total']} in {whole['cp2k_runs']} run(s) {whole['status']}", flush=True)
    load_after = os.getloadavg()

    ok = [r for r in rows if r["status"] == "ok"]
    mean_wall = float(np.mean([r["wall_seconds"] for r in ok])) if ok else None
    mean_atoms = float(np.mean([r["atoms"] for r in ok])) if ok else None
    measured = {
        "carved_labels": len(rows), "carved_ok": len(ok), "carved_atoms_mean": mean_atoms,
        "carved_atoms": [r["atoms"] for r in rows], "carved_wall_seconds_mean": mean_wall,
        "carved_scf_steps_mean": float(np.mean([r["scf_steps_total"] for r in ok])) if ok else None,
        "carved_needing_recovery": sum(r["cp2k_runs"] > 1 for r in rows),
        "whole_atoms": whole["atoms"], "whole_status": whole["status"], "whole_wall_seconds": whole["wall_seconds"],
        "whole_scf_steps": whole["scf_steps_total"],
        "ratio_wall_whole_over_mean_carved": whole["wall_seconds"] / mean_wall if mean_wall else None,
    }
    # the size-dependent cost is the time of one SCF step; the steps depend on the cell's electronic
    # structure (carved cells needed many more than the whole frame), not on its size
    both = [r for r in ok + [whole] if r["status"] == "ok" and r["final_scf_steps"] and r["final_cp2k_seconds"]]
    sizes = [r["atoms"] for r in both]
    per_step = [r["final_cp2k_seconds"] / r["final_scf_steps"] for r in both]
    prefactor, exponent = power_law(sizes, per_step) if len(set(sizes)) > 1 else (None, None)
    scale = PROJECTED_ATOMS / whole["atoms"]
    cubic_whole = whole["wall_seconds"] * scale ** 3
    projection = {
        "is": "a projection, not a measurement: no 2160-atom frame was labelled",
        "frame_atoms": PROJECTED_ATOMS,
        "carved": "carved cells keep their measured cost: their size is set by the carving radius, not by the frame",
        "cubic": {"method": "the 240-atom whole frame's wall time x (2160/240)^3",
                  "whole_wall_seconds": cubic_whole,
                  "ratio_whole_over_mean_carved": cubic_whole / mean_wall if mean_wall else None},
        "fitted_per_scf_step": {
            "method": "seconds per SCF step = a * atoms^b fitted through every measured label's final run; "
                      "the 2160-atom frame taking the 240-atom frame's SCF steps",
            "prefactor": prefactor, "exponent": exponent,
            "whole_wall_seconds": (prefactor * PROJECTED_ATOMS ** exponent * whole["final_scf_steps"]
                                   if prefactor and whole["final_scf_steps"] else None)},
    }
    fitted = projection["fitted_per_scf_step"]
    fitted["ratio_whole_over_mean_carved"] = (fitted["whole_wall_seconds"] / mean_wall
                                              if fitted["whole_wall_seconds"] and mean_wall else None)

    print(f"\nCP2K {settings.method} ({CONFIG.name} reference), {args.ranks} rank(s); frame {whole['atoms']} atoms, "
          f"carving radius {radius:g} A")
    print(f"{'label':>13} {'atoms':>5} {'wall/s':>8} {'cp2k/s':>8} {'scf':>5} {'runs':>4} {'s/step':>7} {'status':>6}"
          " recovered_by")
    for row in rows + [whole]:
        step = (f"{row['final_cp2k_seconds'] / row['final_scf_steps']:7.3f}"
                if row["final_cp2k_seconds"] and row["final_scf_steps"] else f"{'-':>7}")
        print(f"{row['kind']:>13} {row['atoms']:>5} {row['wall_seconds']:8.1f} {row['cp2k_seconds_total']:8.1f} "
              f"{row['scf_steps_total']:>5} {row['cp2k_runs']:>4} {step} {row['status']:>6} {row['recovered_by'] or ''}")
    if mean_wall:
        print(f"mean carved: {mean_atoms:.1f} atoms, {mean_wall:.1f} s, {measured['carved_scf_steps_mean']:.0f} SCF steps "
              f"({measured['carved_needing_recovery']} of {len(rows)} needed an SCF recovery rung); whole: "
              f"{whole['wall_seconds']:.1f} s, {whole['scf_steps_total']} steps; whole / mean carved = "
              f"{measured['ratio_wall_whole_over_mean_carved']:.2f}")
        print(f"PROJECTION (not measured) for a {PROJECTED_ATOMS}-atom frame: cubic {cubic_whole:.0f} s = "
              f"{projection['cubic']['ratio_whole_over_mean_carved']:.0f} x a mean carved label")
        if fitted["whole_wall_seconds"]:
            print(f"  per SCF step fitted ~ N^{exponent:.2f} through the measured labels, x {whole['final_scf_steps']} steps: "
                  f"{fitted['whole_wall_seconds']:.0f} s = {fitted['ratio_whole_over_mean_carved']:.0f} x")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cores")

    write_summary(summary_path(__file__), {
        "reference": {"config": str(CONFIG.relative_to(ROOT)), **settings.label_settings(), "ranks": args.ranks,
                      "omp_threads": settings.omp_threads, "walltime": settings.walltime},
        "frame": "beta-cristobalite x10, Vashishta melt-and-quench (benchmarks/carve_cost.py frame)",
        "carve_radius": radius, "boundary": "as cut" if args.as_cut else f"relaxed beyond {pick_settings(config).frozen_radius} A",
        "labels": rows + [whole], "measured": measured, "projection": projection,
        "machine": {"cores": os.cpu_count(), "load_1min_before": load_before[0], "load_1min_after": load_after[0],
                    "python": platform.python_version(), "niceness": os.nice(0)},
        "workdir": str(workdir),
    })


if __name__ == "__main__":
    main()
