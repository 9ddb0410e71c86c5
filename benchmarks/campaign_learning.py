"""Labels, iterations and wall time to "converged" on the three gates, and the learning curve.

    python benchmarks/campaign_learning.py                      # the classical stand-in, 3 seeds
    python benchmarks/campaign_learning.py --demo runs/sio2-quick   # also read a finished `make demo`
    python benchmarks/campaign_learning.py --run-demo           # run the demo (CP2K xTB) here first

The stand-in is the demo's config (configs/sio2-quick.yaml) with Vashishta for CP2K xTB, judged at
2x (48 atoms) like the suite's campaign, on 3 campaign seeds. Per iteration: labels, the gates'
figures (clean frames, the confident fraction, the explored-set force error with its standard
error), the prospective error on the selected labels, and the calibration (share of atoms inside
the 90% band, where fitted and on the new labels). Goal (issue 30): converged in at most 300
labels at this scale. Writes ``campaign_learning.json`` and ``campaign_learning.png`` beside this
script (with the machine and date); the runs go to ``benchmarks/results/campaign_learning/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "results" / "campaign_learning"

sys.path.insert(0, str(HERE))
from provenance import summary_path, write_summary  # noqa: E402

SUMMARY = summary_path(__file__)

def twin(seed: int) -> dict:
    """The classical stand-in of the demo: configs/sio2-quick.yaml with Vashishta for CP2K xTB,
    judged at 2x (as the suite's campaign), campaign seed ``seed``."""
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "sio2-quick.yaml").read_text())
    return {**config, "name": f"stand-in-s{seed}", "seed": seed, "reference": {"kind": "lammps"},
            "explore": {**config["explore"], "sizes": [1, 2], "seeds": [1, 2], "protocol_scale": 0.004},
            "judge": {**config["judge"], "target_size": 2, "max_energy_mae": 40.0},
            "stop": {"max_iterations": 8}}


def curve(run_dir: Path) -> dict:
    """Per iteration: labels, the gates' figures, held-out, explored and prospective errors, calibration."""
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = []
    for m in summary["metrics"]:
        prospective = m.get("prospective_errors") or {}
        target = [t for t, size in m["sizes"].items() if size == m["target_size"]]
        explored, held = m.get("explored_test_set") or {}, m.get("held_out_with_error") or {}
        calibration = m.get("calibration") or {}
        out_of_sample = {k: v.get("inside") for k, v in (calibration.get("out_of_sample") or {}).items()}
        rows.append({
            "iteration": m["iteration"], "n_train": m["n_train"], "labels": m["labels"], "new_labels": m["new_labels"],
            "gates": m.get("gates"), "gate_figures": m.get("gate_figures"),
            "tolerance": (m.get("tolerance") or {}).get("value"),
            "confident_fraction": (m.get("confidence") or {}).get("confident_fraction"),
            "target_frames": (m.get("confidence") or {}).get("frames"),
            "explored_force_rmse": explored.get("rmse"), "explored_force_se": explored.get("se"),
            "explored_frames": explored.get("n_frames"),
            "held_out_force_rmse": held.get("rmse", m["errors"]["force_rmse"]), "held_out_force_se": held.get("se"),
            "held_out_energy_mae": m["errors"]["energy_mae"],
            "prospective_force_rmse": prospective.get("force_rmse"),
            "prospective_core_force_rmse": prospective.get("core_force_rmse"),
            "calibration_level": calibration.get("level"),
            "calibration_inside_fitted": (calibration.get("in_sample") or {}).get("inside"),
            "calibration_inside_new": out_of_sample,
            "target_verdicts": {t: m["clustering"][t] for t in target},
            "decision": m["decision"]["rule"],
        })
    return {"run_dir": str(run_dir), "stopped_by": summary["stopped_by"], "why": summary["why"],
            "iterations": summary["iterations"], "target_size": summary.get("target_size"),
            "selected_labels": sum(r["new_labels"] for r in rows), "labels_at_stop": rows[-1]["labels"] if rows else None,
            "iterations_table": rows}


def logged_minutes(run_dir: Path) -> float | None:
    """Minutes from the first to the last line of a run's campaign.log (a run not made by this
    script; a resumed run counts its pauses too)."""
    from datetime import datetime

    lines = (run_dir / "campaign.log").read_text().splitlines() if (run_dir / "campaign.log").exists() else []
    stamps = [datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S") for line in (lines[:1] + lines[-1:]) if line[:4].isdigit()]
    return round((stamps[-1] - stamps[0]).total_seconds() / 60, 1) if len(stamps) == 2 else None


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    for (name, result), colour in zip(results.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        rows = result["iterations_table"]
        k = [r["iteration"] for r in rows]
        axes[0].plot(k, [r["confident_fraction"] for r in rows], "o-", color=colour, label=name)
        axes[1].errorbar(k, [r["explored_force_rmse"] for r in rows], yerr=[r["explored_force_se"] or 0 for r in rows],
                         fmt="o-", color=colour, capsize=3, label=f"{name}: explored test set")
        axes[1].plot(k, [r["prospective_core_force_rmse"] for r in rows], "x:", color=colour, label=f"{name}: prospective")
        axes[1].plot(k, [r["tolerance"] for r in rows], "-", color=colour, lw=0.8, alpha=0.6)
        axes[2].plot(k, [r["calibration_inside_fitted"] for r in rows], "s--", color=colour, label=f"{name}: where fitted")
        new = [(r["iteration"], v) for r in rows for v in (r["calibration_inside_new"] or {}).values() if v is not None]
        axes[2].plot([x for x, _ in new], [v for _, v in new], "o", color=colour, mfc="none", label=f"{name}: new labels")
    axes[0].axhline(0.9, color="k", ls=":", lw=1)
    axes[0].set(xlabel="iteration", ylabel="target-size frames with no atom over the tolerance", ylim=(0, 1.02),
                title="gate 2: confidence (needs 0.9)")
    axes[1].set(xlabel="iteration", ylabel="force RMSE (eV/A)", title="gate 3: explored-set error +- SE\n(thin: tolerance)")
    axes[2].axhline(0.9, color="k", ls=":", lw=1)
    axes[2].set(xlabel="iteration", ylabel="share of atoms inside the 90% band", ylim=(0, 1.02), title="calibration")
    for ax in axes:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", help="a finished demo run directory to include")
    parser.add_argument("--run-demo", action="store_true", help="run `alcgap run configs/sio2-quick.yaml` first")
    parser.add_argument("--seeds", default="1,2,3", help="campaign seeds of the classical stand-in")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    import os

    import quippy  # noqa: F401  (loads the OpenBLAS gap_fit and quippy run on)
    import threadpoolctl

    from alcgap.config import load_campaign_config
    from alcgap.workflow.campaign import run_campaign

    kernels = {Path(i["filepath"]).name: i.get("architecture") for i in threadpoolctl.threadpool_info()
               if i["internal_api"] == "openblas"}
    blas_env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"OpenBLAS kernels: {kernels}; environment: {blas_env}")

    results, runs = {}, {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        name, run_dir = f"stand-in seed {seed}", OUT / f"stand-in-s{seed}"
        runs[name] = run_dir
        if not (run_dir / "summary.json").exists():
            started = time.time()
            run_campaign(load_campaign_config(twin(seed)), run_dir)
            (run_dir / "wall_seconds").write_text(f"{time.time() - started:.1f}")
        results[name] = curve(run_dir)
    demo = Path(args.demo) if args.demo else None
    if args.run_demo:
        demo = OUT / "demo"
        started = time.time()
        subprocess.run([sys.executable, "-m", "alcgap.cli", "run", str(ROOT / "configs/sio2-quick.yaml"), "--run-dir", str(demo)],
                       check=True)
        (demo / "wall_seconds").write_text(f"{time.time() - started:.1f}")
    if demo is not None:
        runs["demo (CP2K xTB)"] = demo
        results["demo (CP2K xTB)"] = curve(demo)
    for name, run in runs.items():
        wall = run / "wall_seconds"
        results[name]["wall_minutes"] = (round(float(wall.read_text()) / 60, 1) if wall.exists()
                                         else logged_minutes(run))  # a run made elsewhere: from its log
        result = results[name]
        result["goal_300_labels"] = result["stopped_by"] == "converged" and result["selected_labels"] <= 300
        print(f"{name}: {result['stopped_by']} after {result['iterations']} iterations, {result['selected_labels']} "
              f"selected labels, {result['wall_minutes']} min; goal (converged on the three gates in <= 300 labels) "
              f"{'met' if result['goal_300_labels'] else 'NOT met'}")
        for r in result["iterations_table"]:
            print(f"  iteration {r['iteration']}: {r['n_train']} frames; confident {r['confident_fraction']}; explored "
                  f"{r['explored_force_rmse']} +- {r['explored_force_se']} eV/A on {r['explored_frames']} frames "
                  f"(tolerance {r['tolerance']}); prospective {r['prospective_core_force_rmse']}; calibration "
                  f"{r['calibration_inside_fitted']} / {r['calibration_inside_new']}; {r['decision']}")
    stand_in = [r for n, r in results.items() if n.startswith("stand-in")]
    spread = {key: [r[key] for r in stand_in] for key in ("iterations", "selected_labels", "wall_minutes", "stopped_by")}
    write_summary(SUMMARY, {"openblas": kernels, "openblas_env": blas_env, "stand_in_spread": spread, **results})
    plot(results, HERE / "campaign_learning.png")
    print(f"wrote {SUMMARY} and {HERE / 'campaign_learning.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
