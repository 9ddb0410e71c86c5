"""Reproduce the evidence of Milardovich et al. (SSE 2022), section 3 and Figs. 3-5, as a benchmark.

    python benchmarks/paper_sio2/run.py --scale fast [--seeds 3] [--training both] [--out DIR]
    python benchmarks/paper_sio2/run.py --scale paper --site sites/<cluster>.yaml [--dry-run]

Both potentials (composite = repulsive aux + main SOAP GAP; traditional = the same main GAP
alone) are fitted from the same data with the same settings, for each training mode
(``energies``: the paper's; ``energies+forces``: its conclusion's). Then, per mode:

1. held-out energy MAE of both (paper: 4.7 vs 4.8 meV/atom)       -> Fig. 3 (parity)
2. the same melt-and-quench MD with both and with the reference, N seeds: clustering verdicts,
   RDF distance of the quenched structures to the reference        -> Fig. 4e (partial RDFs)
3. VDOS by finite differences of the quenched structures, model vs reference, overlap below
   40 meV                                                           -> Fig. 5a (VDOS)
4. a cell 10x the training size melted and quenched with the composite: clean or clustered
5. cost of the composite over the traditional GAP (interleaved force calls; MD step time)

``fast`` runs everything here (Vashishta SiO2 stands in for DFT). ``paper`` writes the
CP2K-PBE campaign configs and launches them through a site (see README.md). Outputs:
``<out>/report.md``, ``<out>/report.json``, ``<out>/figures/*.png``; every MD run keeps its
``task.json`` (rerun by hand with ``python -m alcgap.md.task``). Re-running the same command
resumes: finished fits and MD runs are not repeated. The report's figures (``report.json`` less
the raw per-claim measurements) are also written beside this script, with the machine and the
date: ``benchmarks/paper_sio2/results-<scale>.json``, the file the docs quote.
"""

from __future__ import annotations

import os

# quippy (OpenMP) in this process: one thread, one MD at a time; gap_fit gets its own threads
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "paper_sio2"


def write_committed_summary(out: Path, scale: str) -> Path | None:
    """``results-<scale>.json`` beside this script: the headline figures and verdicts of ``out``'s report."""
    report = out / "report.json"
    if not report.exists():
        return None
    sys.path.insert(0, str(HERE.parent))
    from provenance import write_summary

    figures = {key: value for key, value in json.loads(report.read_text()).items() if key != "claims"}
    return write_summary(HERE / f"results-{scale}.json", {"report": str(report), **figures})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["fast", "paper"], default="fast")
    parser.add_argument("--seeds", type=int, default=3, help="MD seeds per potential for claims 2 and 3 (default 3)")
    parser.add_argument("--training", choices=["energies", "energies+forces", "both"], default="both",
                        help="what the main GAPs are trained on (default both)")
    parser.add_argument("--out", default=None, help=f"output folder (default {DEFAULT_OUT}/<scale>)")
    parser.add_argument("--site", default=None, help="paper scale: site YAML (sites/<cluster>.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="paper scale: write configs and the plan, launch nothing")
    parser.add_argument("--report-only", action="store_true",
                        help="fast scale: rewrite the report from the measurements in --out, run nothing")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.scale == "paper" and not args.site and not args.dry_run:
        parser.error("--scale paper runs on a cluster: give --site sites/<cluster>.yaml (or --dry-run)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    from scales import SCALES, TRAINING_MODES

    modes = list(TRAINING_MODES) if args.training == "both" else [args.training]
    out = Path(args.out) if args.out else DEFAULT_OUT / args.scale
    scale = SCALES[args.scale]
    started = time.perf_counter()
    if args.scale == "paper":
        from paper_scale import launch_paper_scale

        code = launch_paper_scale(scale, modes, args.seeds, out, site=args.site, dry_run=args.dry_run)
        if code == 0 and not args.dry_run:
            write_committed_summary(out, args.scale)
        return code
    from fast_scale import rebuild_report, run_fast_scale

    if args.report_only:
        report = rebuild_report(scale, modes, args.seeds, out)
        print(report.read_text())
        print(f"summary: {write_committed_summary(out, args.scale)}")
        return 0
    report = run_fast_scale(scale, modes, args.seeds, out)
    print(report.read_text())
    print(f"report: {report}  ({(time.perf_counter() - started) / 60:.1f} min); summary: "
          f"{write_committed_summary(out, args.scale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
