"""Active learning with and without the auxiliary: what the aux saves.

    nice -n 5 python benchmarks/campaign_aux.py [--seeds 1 2 3] [--site local]
    python benchmarks/campaign_aux.py --config configs/sio2-paper.yaml --site sites/slurm.yaml  # paper scale

The same campaign, with the same seed and the same budget per iteration, run twice:

- ``composite``: the package's method (``potential: composite``): dimer scans, the repulsive aux,
  the main GAP on the residual, exploration MD with the composite;
- ``plain``: a main GAP alone on the total energies (``potential: plain``): no dimer scans, no aux;
  the loop must learn the short range from its labels.

At the fast scale the campaign is the classical twin of the demo (``configs/sio2-quick.yaml`` with
the Vashishta reference for CP2K xTB, judged at 10x). ``--config`` and ``--site`` run any other
campaign (the paper's, through a cluster site) the same way. Per seed and potential it reports
the labels (condensed ones trained on, and the dimer scan's), the iterations and wall time to the
first clean 10x run, the prospective error per iteration, and the stress-test survival of the
final model (``alcgap.survival``: the same hot NVT runs for every model, from the crystal, with the
package's adaptive step; unphysical = a pair inside its aux cutoff, a collapse or lost atoms).

Writes its summary to ``benchmarks/campaign_aux.json`` (beside this script, with the machine and date);
the campaigns and ``campaign_aux.png`` go to ``benchmarks/results/campaign_aux/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "results" / "campaign_aux"
POTENTIALS = ("composite", "plain")

sys.path.insert(0, str(HERE))
from campaign_learning import curve, twin  # noqa: E402
from provenance import summary_path, write_summary  # noqa: E402

SUMMARY = summary_path(__file__)


def run(config: dict, potential: str, seed: int, site: str) -> tuple[Path, float | None]:
    """Run one campaign (skipped when it has finished before); its folder and wall seconds."""
    folder = OUT / f"{potential}-s{seed}"
    if (folder / "summary.json").exists():
        return folder, None
    OUT.mkdir(parents=True, exist_ok=True)
    source = OUT / f"{potential}-s{seed}.yaml"
    source.write_text(yaml.safe_dump({**config, "name": f"aux-{potential}-s{seed}", "seed": seed,
                                      "potential": potential}, sort_keys=False))
    started = time.time()
    command = [sys.executable, "-m", "alcgap.cli", "resume" if folder.exists() else "run"]
    command += [str(folder)] if folder.exists() else [str(source), "--run-dir", str(folder)]
    with open(OUT / f"{potential}-s{seed}.log", "a") as log:
        subprocess.run(command + ["--site", site], check=True, stdout=log, stderr=subprocess.STDOUT)
    return folder, time.time() - started


def label_counts(folder: Path) -> dict:
    from alcgap.store import LabelStore

    rows = LabelStore(folder / "data.db").rows(status=None)
    count = lambda *origins: sum(1 for r in rows if r.origin.split(":")[0] in origins)  # noqa: E731
    return {"dimer_and_atom": count("dimer", "isolated"), "bootstrap": count("bootstrap"), "selected": count("explore"),
            "failed": sum(1 for r in rows if r.status != "ok")}


def final_model(folder: Path, iterations: int) -> str:
    from alcgap.workflow.state import IterationState

    return IterationState(folder, iterations).get("fit")["xml"]


def stress(models: dict[str, str], cutoffs: dict, temperatures: list[float], seeds: list[int], steps: int) -> list[dict]:
    from alcgap.survival import survival_sweep, write_sweep
    from alcgap.structures import beta_cristobalite

    records = survival_sweep(models, ["Si", "O"], beta_cristobalite(), OUT / "stress", temperatures=temperatures,
                           seeds=seeds, steps=steps, timestep=1.0, aux_cutoffs=cutoffs, max_displacement=0.1)
    return write_sweep(records, OUT / "stress", steps, settings={"temperatures": temperatures, "seeds": seeds,
                                                                  "steps": steps, "aux_cutoffs": cutoffs,
                                                                  "models": models})["records"]


def spread(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": round(statistics.mean(values), 3), "min": min(values), "max": max(values),
            "stdev": round(statistics.stdev(values), 3) if len(values) > 1 else 0.0}


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"composite": "tab:blue", "plain": "tab:red"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    for key, row in rows.items():
        potential = row["potential"]
        table = row["iterations_table"]
        # plain dashed with crosses over composite solid with dots: where they coincide both show
        style = {"composite": ("o-", 7, 3.0), "plain": ("x--", 9, 1.5)}[potential]
        axes[0].plot([r["iteration"] for r in table], [r["prospective_core_force_rmse"] for r in table], style[0],
                     ms=style[1], lw=style[2], color=colours[potential], alpha=0.8, label=f"{potential}, seed {row['seed']}")
        for r in table:
            clean = r["target_verdicts"] and all(v == "clean" for v in r["target_verdicts"].values())
            axes[0].scatter([r["iteration"]], [r["prospective_core_force_rmse"] or 0], s=90, facecolors="none",
                            edgecolors="green" if clean else "none")
    axes[0].set(xlabel="iteration", ylabel="prospective force RMSE (eV/A)",
                title="model k on the frames iteration k chose\n(green ring: its 10x run was clean)")
    axes[0].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    seeds = sorted({row["seed"] for row in rows.values()})
    width = 0.38
    for offset, potential in ((-width / 2, "composite"), (width / 2, "plain")):
        values = [rows.get(f"{potential}-s{s}", {}).get("frames_trained_at_first_clean") for s in seeds]
        axes[1].bar([i + offset for i in range(len(seeds))], [v if v is not None else 0 for v in values], width,
                    color=colours[potential], label=potential)
        for i, v in enumerate(values):
            axes[1].annotate("never" if v is None else str(v), (i + offset, v or 0), ha="center", fontsize=8,
                             xytext=(0, 3), textcoords="offset points")
    axes[1].set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds])
    axes[1].set(ylabel="condensed labels trained on", title="labels to the first clean 10x run\n(\"never\": not within the stop rule)")
    for x, potential in enumerate(POTENTIALS):
        mine = [row for row in rows.values() if row["potential"] == potential]
        for k, row in enumerate(mine):  # side by side, one per campaign seed: equal values stay visible
            axes[2].scatter([x + 0.12 * (k - (len(mine) - 1) / 2)], [row["stress"]["physical_fraction"]], s=70,
                            color=colours[potential], alpha=0.8)
            axes[2].annotate(f"s{row['seed']}", (x + 0.12 * (k - (len(mine) - 1) / 2), row["stress"]["physical_fraction"]),
                             fontsize=7, ha="center", xytext=(0, -12), textcoords="offset points")
    axes[2].set_xticks(range(len(POTENTIALS)), POTENTIALS)
    axes[2].set_xlim(-0.6, len(POTENTIALS) - 0.4)
    axes[2].set(ylabel="fraction of stress runs physical to the end", ylim=(-0.05, 1.05),
                title="stress test of each final model\n(one point per campaign seed)")
    for ax in axes[:2]:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="campaign YAML (default: the classical twin of the demo)")
    parser.add_argument("--site", default="local")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--stress-temperatures", type=float, nargs="+", default=[6000.0])
    parser.add_argument("--stress-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--stress-steps", type=int, default=1000)
    parser.add_argument("--plot-only", action="store_true", help="redraw campaign_aux.png from the summary JSON")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(SUMMARY.read_text())["campaigns"], OUT / "campaign_aux.png")
        return 0
    config = yaml.safe_load(Path(args.config).read_text()) if args.config else twin()
    cutoffs = config["aux"]["cutoffs"]

    rows = {}
    for seed in args.seeds:
        for potential in POTENTIALS:
            folder, seconds = run(config, potential, seed, args.site)
            result = curve(folder)
            key = f"{potential}-s{seed}"
            timing_path = OUT / f"{key}.seconds"
            if seconds is not None:
                timing_path.write_text(f"{seconds:.1f}")
            result.update(potential=potential, seed=seed, labels=label_counts(folder),
                          wall_minutes=round(float(timing_path.read_text()) / 60, 1) if timing_path.exists() else None,
                          model=final_model(folder, result["iterations"]))
            rows[key] = result
            print(f"{key}: {result['stopped_by']} after {result['iterations']} iterations, {result['wall_minutes']} min; "
                  f"first clean 10x at iteration {result['first_clean_iteration']} with "
                  f"{result['frames_trained_at_first_clean']} condensed frames; labels {result['labels']}", flush=True)
    records = stress({key: row["model"] for key, row in rows.items()}, cutoffs, args.stress_temperatures,
                     args.stress_seeds, args.stress_steps)
    for key, row in rows.items():
        mine = [r for r in records if r["potential"] == key]
        row["stress"] = {"runs": len(mine), "physical": sum(r["physical"] for r in mine),
                         "physical_fraction": sum(r["physical"] for r in mine) / max(1, len(mine)),
                         "first_unphysical_steps": [r["first_unphysical_step"] for r in mine],
                         "outcomes": [r["outcome"] for r in mine],
                         "min_distances": [r["min_distances"] for r in mine]}
    by_potential = {}
    for potential in POTENTIALS:
        mine = [row for row in rows.values() if row["potential"] == potential]
        by_potential[potential] = {
            "campaigns": len(mine),
            "reached_clean_10x": sum(row["first_clean_iteration"] is not None for row in mine),
            "iterations_to_clean": spread([row["first_clean_iteration"] for row in mine]),
            "condensed_labels_to_clean": spread([row["frames_trained_at_first_clean"] for row in mine]),
            "dimer_labels": spread([row["labels"]["dimer_and_atom"] for row in mine]),
            "wall_minutes": spread([row["wall_minutes"] for row in mine]),
            "stress_physical_fraction": spread([row["stress"]["physical_fraction"] for row in mine]),
        }
    write_summary(SUMMARY, {"by_potential": by_potential, "campaigns": rows,
                            "stress_settings": {"temperatures": args.stress_temperatures, "seeds": args.stress_seeds,
                                                "steps": args.stress_steps}})
    plot(rows, OUT / "campaign_aux.png")
    print(json.dumps(by_potential, indent=1))
    print(f"wrote {SUMMARY} and {OUT / 'campaign_aux.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
