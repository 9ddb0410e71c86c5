"""Which OT minimiser to start a CP2K xTB label with: DIIS against CG, on the same cells.

    nice -n 10 python benchmarks/cp2k_minimizer.py [--samples 3] [--jobs 2]

Cells: the carved cells of ``benchmarks/cp2k_carve_cost.py`` (``--samples`` single-atom events
and ``--samples`` short Si-O pairs of the 240-atom Vashishta frame, carved with the demo config's
radius, boundary relaxed as the campaign relaxes it), plus ``--samples`` whole 24-atom frames of a
Vashishta melt (what the bootstrap and the 1x runs label). Each cell is labelled by
``configs/sio2-quick.yaml``'s reference twice, ``reference.ot_minimizer`` DIIS and CG, everything
else equal; ``--jobs`` labels run at once (one core each). Reported per cell: atoms, SCF steps
(every run, recovery rungs included), wall seconds, status and the energy difference CG - DIIS
(both converged to EPS_SCF, so it must be within the SCF tolerance). The ratios are of wall
times measured in this one run. Writes benchmarks/cp2k_minimizer.json (beside this script, with the
machine and date).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from carve_cost import events, frame  # noqa: E402
from cp2k_carve_cost import CONFIG, label_cost  # noqa: E402
from provenance import summary_path, write_summary  # noqa: E402

from alcgap.explore.carve import CarveSettings, carve, relax_boundary  # noqa: E402
from alcgap.config import load_campaign_config  # noqa: E402
from alcgap.reference import LammpsReference, make_reference  # noqa: E402
from alcgap.workflow.stages.explore import pick_settings  # noqa: E402


def _label(job: tuple) -> dict:
    name, atoms, minimizer, workdir = job
    config = load_campaign_config(CONFIG)
    settings = config.reference.model_copy(update={"ot_minimizer": minimizer, "walltime": 1800.0})
    row = label_cost(make_reference(settings, config.species, workdir), atoms, name)
    row.update(minimizer=minimizer, energy=_energy(row))
    print(f"  {name:>12} {minimizer:>4} {row['atoms']:>4} atoms {row['wall_seconds']:7.1f} s "
          f"scf {row['scf_steps_total']:>4} {row['status']}", flush=True)
    return row


def _energy(row: dict) -> float | None:
    from alcgap.reference import parse_cp2k_output

    if row["status"] != "ok" or not row.get("directory"):
        return None
    outs = sorted(Path(row["directory"]).rglob("cp2k.out"), key=lambda path: len(path.parts))
    return parse_cp2k_output(outs[-1].read_text(errors="replace")).energy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    config = load_campaign_config(CONFIG)
    radius = config.label.carve_radius or config.main.soap.cutoff
    relaxer = LammpsReference.vashishta_sio2().calculator()
    source = frame(10, True)
    cells = []
    for index, (kind, atoms, centres) in enumerate(events(source, args.samples, np.random.default_rng(0))):
        cell = relax_boundary(atoms, carve(atoms, centres, CarveSettings(radius=radius)), relaxer, pick_settings(config).frozen_radius)
        cells.append((f"carved-{kind}-{index}", cell))
    small = frame(1, True)
    rng = np.random.default_rng(1)
    for index in range(args.samples):
        whole = small.copy()
        whole.rattle(0.05, seed=int(rng.integers(1 << 30)))
        cells.append((f"whole24-{index}", whole))
    workdir = Path(tempfile.mkdtemp(prefix="alcgap-minimizer-"))
    jobs = [(name, atoms, minimizer, str(workdir / minimizer)) for name, atoms in cells for minimizer in ("DIIS", "CG")]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(_label, jobs))

    table = []
    for name, _ in cells:
        diis, cg = (next(r for r in rows if r["kind"] == name and r["minimizer"] == m) for m in ("DIIS", "CG"))
        both = diis["energy"] is not None and cg["energy"] is not None
        table.append({"cell": name, "atoms": diis["atoms"],
                      "diis": {k: diis[k] for k in ("wall_seconds", "scf_steps_total", "status", "recovered_by")},
                      "cg": {k: cg[k] for k in ("wall_seconds", "scf_steps_total", "status", "recovered_by")},
                      "wall_ratio_cg_over_diis": cg["wall_seconds"] / diis["wall_seconds"],
                      "energy_cg_minus_diis_eV": (cg["energy"] - diis["energy"]) if both else None})
    print(f"\n{'cell':>16} {'atoms':>5} {'DIIS s':>7} {'steps':>5} {'CG s':>7} {'steps':>5} {'CG/DIIS':>7} {'dE/eV':>9}")
    for row in table:
        d, c = row["diis"], row["cg"]
        de = f"{row['energy_cg_minus_diis_eV']:9.2e}" if row["energy_cg_minus_diis_eV"] is not None else f"{'-':>9}"
        print(f"{row['cell']:>16} {row['atoms']:>5} {d['wall_seconds']:7.1f} {d['scf_steps_total']:>5} "
              f"{c['wall_seconds']:7.1f} {c['scf_steps_total']:>5} {row['wall_ratio_cg_over_diis']:7.2f} {de}")
    summary = {}
    for group in ("carved", "whole24"):
        mine = [r for r in table if r["cell"].startswith(group)]
        summary[group] = {"cells": len(mine),
                          "diis_wall_seconds": sum(r["diis"]["wall_seconds"] for r in mine),
                          "cg_wall_seconds": sum(r["cg"]["wall_seconds"] for r in mine)}
        summary[group]["ratio_cg_over_diis"] = summary[group]["cg_wall_seconds"] / summary[group]["diis_wall_seconds"]
        print(f"{group}: DIIS {summary[group]['diis_wall_seconds']:.0f} s, CG {summary[group]['cg_wall_seconds']:.0f} s, "
              f"CG/DIIS {summary[group]['ratio_cg_over_diis']:.2f}")
    write_summary(summary_path(__file__), {"config": str(CONFIG.name), "jobs": args.jobs, "cells": table, "summary": summary})


if __name__ == "__main__":
    main()
