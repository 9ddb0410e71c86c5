"""Worker utilisation of a campaign's labelling and the driver's own overhead per iteration.

    python benchmarks/campaign_utilisation.py                       # runs configs/sio2-quick.yaml
    python benchmarks/campaign_utilisation.py --run-dir runs/X      # analyses a finished run

Utilisation of a labelling phase = sum of the reference calls' busy time (started -> finished,
recorded in the store for every label) / (label workers x the phase's span, from the first
start to the last finish). Goal: at least 90%. Driver overhead = the time the driver spent in
its own code while the phase ran (storing labels, submitting apps), from ``state.json``.
Writes ``benchmarks/campaign_utilisation.json`` (beside this script, with the machine and date).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import ARTEFACTS, summary_path, write_summary  # noqa: E402


def phases(run_dir: Path) -> list[dict]:
    from alcgap.store import LabelStore

    store = LabelStore(run_dir / "data.db")
    groups: dict[tuple, list] = defaultdict(list)
    for row in store.rows(status=None):
        if row.get("started") is None:
            continue
        kind = "dimers" if row.origin in ("dimer", "isolated") else row.origin.split(":")[0]
        groups[(row.iteration, kind)].append((row.started, row.finished))
    out = []
    for (iteration, kind), spans in sorted(groups.items()):
        start = min(s for s, _ in spans)
        end = max(f for _, f in spans)
        busy = sum(f - s for s, f in spans)
        out.append({"iteration": iteration, "phase": kind, "labels": len(spans), "span_s": end - start,
                    "busy_s": busy, "mean_label_s": busy / len(spans)})
    return out


def driver_overhead(run_dir: Path) -> list[dict]:
    out = []
    for state_file in sorted(run_dir.glob("iter-*/state.json")):
        stages = json.loads(state_file.read_text())["stages"]
        for name, stage in stages.items():
            if "driver_s" in stage:
                out.append({"iteration": int(state_file.parent.name[5:]), "stage": name,
                            "driver_s": stage["driver_s"], "stage_s": stage.get("seconds")})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "sio2-quick.yaml"))
    parser.add_argument("--run-dir", default=None, help="analyse this finished run instead of running one")
    parser.add_argument("--site", default="local")
    args = parser.parse_args()

    from alcgap.sites import load_site

    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        from alcgap.workflow.campaign import run_campaign

        run_dir = ARTEFACTS / "campaign-run"
        run_campaign(args.config, run_dir, site=args.site)
    workers = load_site(args.site, run_dir).tasks.cp2k.max_concurrent
    table = phases(run_dir)
    for entry in table:
        entry["workers"] = workers
        entry["utilisation"] = entry["busy_s"] / (workers * entry["span_s"]) if entry["span_s"] > 0 else float("nan")
    overhead = driver_overhead(run_dir)
    print(f"{'iter':>4} {'phase':>10} {'labels':>6} {'mean label s':>12} {'span s':>8} {'utilisation':>11}")
    for e in table:
        print(f"{e['iteration']:>4} {e['phase']:>10} {e['labels']:>6} {e['mean_label_s']:>12.2f} {e['span_s']:>8.1f} {e['utilisation']:>11.1%}")
    print(f"\n{'iter':>4} {'stage':>22} {'driver s':>9} {'stage s':>9} {'driver share':>12}")
    for e in overhead:
        share = e["driver_s"] / e["stage_s"] if e.get("stage_s") else float("nan")
        print(f"{e['iteration']:>4} {e['stage']:>22} {e['driver_s']:>9.3f} {e['stage_s'] or 0:>9.1f} {share:>12.2%}")
    out = write_summary(summary_path(__file__), {"run_dir": str(run_dir), "phases": table, "driver": overhead})
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
