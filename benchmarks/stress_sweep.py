"""Claim 2 at the fast scale: where a plain GAP breaks and the composite holds, with the timestep apart.

    nice -n 5 python benchmarks/stress_sweep.py [--temperatures 6000 9000] [--seeds 1 2 3] [--steps 2000]

Models: ``alcgap fit`` of ``configs/sio2-fit-quick.yaml`` with energies only (``main.use_forces:
false``, as in the issue's table), composite and traditional from the same data; the Vashishta
reference itself runs the same sweep as the control. Start: the fit's 24-atom crystal. Each
potential runs NVT at each temperature for each seed, at 1 fs, twice: with a fixed timestep and
with the adaptive one (``max_displacement`` 0.1 A per step). Monitors: a pair inside its aux
cutoff (Si-Si 1.6, Si-O 1.1, O-O 0.8 A) is the first unphysical event; a pair at half of it
stops the run (collapse). Writes ``benchmarks/results/stress_sweep/<timestep mode>/stress.json``
and ``survival.png``, and ``benchmarks/results/stress_sweep/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from alcgap.workflow.state import read_run_json

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "stress_sweep"


def models() -> dict[str, str]:
    fit_dir = OUT / "fit"
    summary = fit_dir / "summary.json"
    if not summary.exists():
        config = yaml.safe_load((ROOT / "configs" / "sio2-fit-quick.yaml").read_text())
        config["main"]["use_forces"] = False
        config["traditional"] = True
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "fit.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run([sys.executable, "-m", "alcgap.cli", "fit", str(OUT / "fit.yaml"), "--run-dir", str(fit_dir)],
                       check=True)
    return read_run_json(summary)["models"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[6000.0, 9000.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--modes", nargs="+", default=["fixed-1fs", "adaptive-0.1A"],
                        help="timestep modes to run (two processes can take one each)")
    args = parser.parse_args()
    from alcgap.reference import vashishta_sio2_commands
    from alcgap.stress import stress_sweep, write_sweep
    from alcgap.structures import beta_cristobalite

    xmls = models()
    potentials = {"composite": xmls["composite"], "traditional": xmls["traditional"],
                  "Vashishta (reference)": vashishta_sio2_commands()}
    cutoffs = {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8}
    summary = json.loads((OUT / "summary.json").read_text()) if (OUT / "summary.json").exists() else {}
    for mode, displacement in (("fixed-1fs", None), ("adaptive-0.1A", 0.1)):
        if mode not in args.modes:
            continue
        started = time.time()
        records = stress_sweep(potentials, ["Si", "O"], beta_cristobalite(), OUT / mode, temperatures=args.temperatures,
                               seeds=args.seeds, steps=args.steps, timestep=1.0, aux_cutoffs=cutoffs,
                               max_displacement=displacement)
        data = write_sweep(records, OUT / mode, args.steps, settings={
            "timestep_fs": 1.0, "max_displacement": displacement, "temperatures": args.temperatures,
            "seeds": args.seeds, "steps": args.steps, "aux_cutoffs": cutoffs, "models": xmls})
        rows = {}
        for record in data["records"]:
            key = f"{record['potential']} @ {record['temperature']:g} K"
            row = rows.setdefault(key, {"runs": 0, "physical": 0, "first_unphysical_steps": [], "outcomes": []})
            row["runs"] += 1
            row["physical"] += record["physical"]
            row["first_unphysical_steps"].append(record["first_unphysical_step"])
            row["outcomes"].append(record["outcome"])
        summary[mode] = {"wall_seconds": round(time.time() - started, 1), "by_potential": rows}
        print(f"\n{mode}:", flush=True)
        for key, row in rows.items():
            print(f"  {key:34s} physical {row['physical']}/{row['runs']}; first unphysical step "
                  f"{row['first_unphysical_steps']}; outcomes {row['outcomes']}")
        (OUT / f"summary-{mode}.json").write_text(json.dumps(summary[mode], indent=1))
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
