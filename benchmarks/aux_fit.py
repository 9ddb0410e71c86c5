"""The auxiliary fit's conditioning and accuracy per pair, for the Vashishta and the CP2K xTB dimers.

    python benchmarks/aux_fit.py [--references vashishta xtb] [--out benchmarks/results/aux_fit]

Writes its summary to benchmarks/aux_fit.json (beside this script, with the machine and date);
the dimer scans and fits stay in --out.

For each reference: the dimer scans of the paper's pairs (aux cutoffs Si-Si 1.6, Si-O 1.1, O-O
0.8 A, scan from 0.5 A every 0.02 A), the aux fit with the package's recipe, and per pair:
- the condition number of the sparse covariance K_MM gap_fit factorises (from the xml) and
  gap_fit's own log10 condition number of its least-squares matrix;
- the largest relative error at the scanned distances (target > 1 eV) and at the midpoints
  between them, computed by the reference itself (never seen by the fit);
- the energy at the core floor (0.05 A) and whether the xml and the table are positive and
  monotone from there (the fit refuses otherwise).
It also prints which OpenBLAS kernel gap_fit's library runs (threadpoolctl), so the same command
run with another OPENBLAS_CORETYPE shows whether the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from provenance import ARTEFACTS, summary_path, write_summary

ROOT = Path(__file__).resolve().parents[1]
CUTOFFS = {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8}


def openblas_kernels() -> dict[str, str]:
    """OpenBLAS libraries loaded in this process (quippy's is the one gap_fit links) and their kernel."""
    import quippy.potential  # noqa: F401  (loads quippy's own OpenBLAS)
    import threadpoolctl

    return {Path(i["filepath"]).name: i.get("architecture") for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas"}


def make_reference(name: str, workdir: Path):
    from alcgap.config import load_campaign_config
    from alcgap.reference import LammpsReference, make_reference

    if name == "vashishta":
        return LammpsReference.vashishta_sio2()
    settings = load_campaign_config(ROOT / "configs" / "sio2-quick.yaml").reference
    return make_reference(settings, ["Si", "O"], workdir=workdir)


def run(name: str, out: Path) -> dict:
    from alcgap.auxiliary import cosine_cutoff, fit_repulsive_aux
    from alcgap.config import AuxSettings
    from alcgap.dimers import DimerCurve, dimer_curve, isolated_atom_energies, pair_curve, scan_grid
    from alcgap.reference.base import isolated
    from alcgap.structures import pair_key
    from quippy.potential import Potential

    started = time.perf_counter()
    reference = make_reference(name, out / name / "labels")
    settings = AuxSettings(cutoffs=CUTOFFS)
    cutoffs, scan = settings.pair_cutoffs(), settings.scan
    atoms = isolated_atom_energies(reference, ["Si", "O"])
    saved = out / name / "dimers.json"
    if saved.exists():  # the scans of an earlier run (delete the file to recompute them)
        data = json.loads(saved.read_text())
        atoms = data["atom_energies"]
        curves = {pair_key(*k.split("-")): DimerCurve(pair_key(*k.split("-")), np.array(c["r"]), np.array(c["energy"]),
                                                      {float(r): why for r, why in c["failed"].items()})
                  for k, c in data["curves"].items()}
    else:
        curves = {p: dimer_curve(reference, p, scan_grid(scan.r_min, rc, scan.step, scan.beyond_cutoff), atoms) for p, rc in cutoffs.items()}
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({"atom_energies": atoms, "curves": {"-".join(p): {
            "r": c.distances.tolist(), "energy": c.energies.tolist(), "failed": {str(r): why for r, why in c.failed.items()}}
            for p, c in curves.items()}}))
    fit = fit_repulsive_aux(curves, cutoffs, settings, out / name / "aux")
    quip = Potential(param_filename=str(fit.xml))
    result = {"reference": name, "kernels": openblas_kernels(), "gap_fit_log10_cond_A": fit.conditioning["gap_fit_log10_cond_A_inf"], "pairs": {}}
    for pair, rc in cutoffs.items():
        key = "-".join(pair)
        check, target = fit.checks[key], fit.targets[key]
        a, b = pair
        e_cut = curves[pair].energy_at(rc)
        mids = np.round(np.arange(scan.r_min + scan.step / 2, rc - settings.transition_fraction * rc, 2 * scan.step), 6)
        ref = np.array([reference.compute(isolated(a + b, [[0, 0, 0], [r, 0, 0]])).energy - atoms[a] - atoms[b] for r in mids])
        mid_target = np.maximum(ref - e_cut, 0.0) * cosine_cutoff(mids, rc, settings.transition_fraction * rc)
        fitted = pair_curve(quip, pair_key(a, b), mids)[0]
        strong = mid_target > 1.0
        result["pairs"][key] = {
            "K_MM_condition_number": fit.conditioning["K_MM"][key]["condition_number"],
            "n_sparse": fit.conditioning["K_MM"][key]["n_sparse"],
            "max_rel_error_scan": check.max_rel_error,
            "max_rel_error_midpoints": float(np.max(np.abs(fitted - mid_target)[strong] / mid_target[strong])),
            "midpoints": int(strong.sum()),
            "energy_at_core_floor_eV": check.energy_at_floor,
            "failed_reference_points": len(target.failed),
        }
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", nargs="+", default=["vashishta", "xtb"], choices=["vashishta", "xtb"])
    parser.add_argument("--out", type=Path, default=ARTEFACTS / "aux_fit", help="dimer scans and fits")
    parser.add_argument("--summary", type=Path, default=summary_path(__file__), help="summary JSON (default: beside this script)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run(name, args.out) for name in args.references]
    for res in results:
        print(f"{res['reference']}: OpenBLAS kernels {res['kernels']}; gap_fit log10 cond(A) {res['gap_fit_log10_cond_A']:.2f}")
        print(f"  {'pair':6s} {'cond K_MM':>10s} {'M':>4s} {'scan err':>9s} {'mid err':>9s} {'E(0.05 A) eV':>13s}")
        for key, p in res["pairs"].items():
            print(f"  {key:6s} {p['K_MM_condition_number']:10.3g} {p['n_sparse']:4d} {p['max_rel_error_scan']:9.2%} "
                  f"{p['max_rel_error_midpoints']:9.2%} {p['energy_at_core_floor_eV']:13.3g}")
    print(f"written {write_summary(args.summary, results)}")


if __name__ == "__main__":
    main()
