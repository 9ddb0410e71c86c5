"""Claim 2 at the fast scale: where a plain GAP breaks and the composite holds, with the timestep apart.

    nice -n 5 python benchmarks/survival_sweep.py [--temperatures 6000 9000] [--seeds 1 2 3] [--steps 2000]

Models: ``alcgap fit`` of ``configs/sio2-fit-quick.yaml`` with energies only (``main.use_forces:
false``, as in the issue's table), composite and traditional from the same data; the Vashishta
reference itself runs the same sweep as the control. Start: the fit's 24-atom crystal. Each
potential runs NVT at each temperature for each seed, at 1 fs, twice: with a fixed timestep and
with the adaptive one bounded by displacement alone (``max_displacement`` 0.1 A per step), and
with the package's default adaptive step (0.1 A and ``max_energy_change`` 0.5 eV per atom per
step). Monitors: a pair inside its aux
cutoff (Si-Si 1.6, Si-O 1.1, O-O 0.8 A) is the first unphysical event; a pair at half of it
stops the run (collapse). Writes ``benchmarks/results/survival_sweep/<timestep mode>/survival.json``
and ``survival.png``, and the summary ``benchmarks/survival_sweep.json`` (beside this script, with
the machine and the date of its last write; modes not run again are kept from the file).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import yaml

from alcgap.workflow.state import read_run_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import ARTEFACTS, summary_path, write_summary  # noqa: E402

OUT = ARTEFACTS / "survival_sweep"
SUMMARY = summary_path(__file__)
#: the composite with its aux cutoffs at DATA_FRACTION x the training data's shortest pairs
AT_DATA = "composite, aux at the data"
DATA_FRACTION = 0.95
#: timestep modes: (max_displacement A, max_energy_change eV) per step; None: no such bound
MODES = {"fixed-1fs": (None, None), "adaptive-0.1A": (0.1, None), "adaptive-0.1A-0.5eV": (0.1, 0.5)}


def fit(name: str, change) -> dict:
    """``alcgap fit`` of sio2-fit-quick, energies only, with ``change(config)`` applied; once."""
    fit_dir = OUT / name
    summary = fit_dir / "summary.json"
    if not summary.exists():
        config = yaml.safe_load((ROOT / "configs" / "sio2-fit-quick.yaml").read_text())
        config["main"]["use_forces"] = False
        change(config)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run([sys.executable, "-m", "alcgap.cli", "fit", str(OUT / f"{name}.yaml"), "--run-dir", str(fit_dir)],
                       check=True)
    return read_run_json(summary)


def models() -> dict[str, str]:
    """The issue's composite and traditional (the paper's aux cutoffs), and a composite whose aux
    cutoffs sit just below the data's shortest pairs (``DATA_FRACTION`` x them): the same data and
    main GAP settings with no range left to the main GAP alone."""
    from alcgap.explore.distances import shortest_in_frames
    from alcgap.structures import pair_name

    xmls = dict(fit("fit", lambda config: config.update(traditional=True))["models"])
    shortest = shortest_in_frames(ase.io.read(OUT / "fit" / "train.xyz", index=":"))
    at_data = {pair_name(p): round(DATA_FRACTION * r, 2) for p, r in shortest.items()}
    wide = fit("fit-aux-at-data", lambda config: config["aux"].update(cutoffs=at_data))
    xmls[AT_DATA] = wide["models"]["composite"]
    return xmls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[6000.0, 9000.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--modes", nargs="+", default=list(MODES),
                        help="timestep modes to run (two processes can take one each)")
    parser.add_argument("--potentials", nargs="+", default=["composite", "traditional", AT_DATA, "Vashishta"],
                        help="which potentials to run")
    parser.add_argument("--replot", action="store_true", help="tables and plots again from the records, no MD")
    args = parser.parse_args()
    from alcgap.reference import vashishta_sio2_commands
    from alcgap.survival import read_sweep, survival_sweep, write_sweep
    from alcgap.structures import beta_cristobalite

    cutoffs = {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8}
    summary = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}
    summary = {key: value for key, value in summary.items() if key not in ("date", "command", "machine")}
    if args.replot:  # the tables and plots again from the records, no MD
        for mode in args.modes:
            if (OUT / mode / "survival.json").exists():
                saved = json.loads((OUT / mode / "survival.json").read_text())
                data = write_sweep(read_sweep(OUT / mode), OUT / mode, saved["settings"]["steps"], settings=saved["settings"])
                summary[mode] = {**summary.get(mode, {}), "by_potential": rows_of(data["records"], cutoffs)}
                report(mode, summary[mode]["by_potential"])
        write_summary(SUMMARY, summary)
        return 0
    xmls = models()
    potentials = {"composite": xmls["composite"], "traditional": xmls["traditional"], AT_DATA: xmls[AT_DATA],
                  "Vashishta (reference)": vashishta_sio2_commands()}
    potentials = {k: v for k, v in potentials.items() if k in args.potentials or k.split(" (")[0] in args.potentials}
    for mode, (displacement, energy) in MODES.items():
        if mode not in args.modes:
            continue
        started = time.time()
        records = survival_sweep(potentials, ["Si", "O"], beta_cristobalite(), OUT / mode, temperatures=args.temperatures,
                               seeds=args.seeds, steps=args.steps, timestep=1.0, aux_cutoffs=cutoffs,
                               max_displacement=displacement, max_energy_change=energy)
        if (OUT / mode / "survival.json").exists():  # runs of the potentials not run this time are kept
            records = [r for r in read_sweep(OUT / mode) if r.potential not in potentials] + records
        data = write_sweep(records, OUT / mode, args.steps, settings={
            "timestep_fs": 1.0, "max_displacement": displacement, "max_energy_change": energy, "temperatures": args.temperatures,
            "seeds": args.seeds, "steps": args.steps, "aux_cutoffs": cutoffs, "models": xmls})
        summary[mode] = {"wall_seconds": round(time.time() - started, 1), "by_potential": rows_of(data["records"], cutoffs)}
        report(mode, summary[mode]["by_potential"])
        (OUT / f"summary-{mode}.json").write_text(json.dumps(summary[mode], indent=1))
    write_summary(SUMMARY, summary)
    return 0


def rows_of(records: list[dict], cutoffs: dict) -> dict:
    """Per potential and temperature: runs physical and held, first unphysical and first unheld
    steps, outcomes, deepest pair over its (the paper's) aux cutoff, drift, smallest timestep."""
    from alcgap.survival import held

    rows = {}
    for record in records:
        row = rows.setdefault(f"{record['potential']} @ {record['temperature']:g} K", {
            "runs": 0, "physical": 0, "held": 0, "first_unphysical_steps": [], "first_unheld_steps": [], "outcomes": [],
            "deepest_cutoff_fraction": [], "drift_meV_atom_ps": [], "smallest_timestep_fs": []})
        row["runs"] += 1
        row["physical"] += record["physical"]
        row["held"] += held(record)
        row["first_unphysical_steps"].append(record["first_unphysical_step"])
        row["first_unheld_steps"].append(record["first_unheld_step"])
        row["outcomes"].append(record["outcome"])
        row["deepest_cutoff_fraction"].append(round(min(d / cutoffs[p] for p, d in record["min_distances"].items()), 3))
        row["drift_meV_atom_ps"].append(record["energy_drift_meV_atom_ps"])
        row["smallest_timestep_fs"].append(record["smallest_timestep_fs"])
    return rows


def report(mode: str, rows: dict) -> None:
    print(f"\n{mode}:", flush=True)
    for key, row in rows.items():
        print(f"  {key:38s} physical {row['physical']}/{row['runs']}, held {row['held']}/{row['runs']}; first "
              f"unheld step {row['first_unheld_steps']}; outcomes {row['outcomes']}; deepest pair/cutoff "
              f"{row['deepest_cutoff_fraction']}; drift {row['drift_meV_atom_ps']} meV/atom/ps")


if __name__ == "__main__":
    sys.exit(main())
