"""The CP2K recovery ladder's success rate on SCF fault cases (real CP2K, GFN1-xTB).

    python benchmarks/cp2k_ladder.py

Fault cases, each on 24-atom beta-cristobalite cells rattled by (A, seed) 0.05/1, 0.1/2, 0.2/3
and 0.2/4 (the last one is tests/test_cp2k_recovery.py's cell that defeats the diagonalisation
ladder):

- ``ot_max_scf_3``: OT with MAX_SCF 3 and one outer cycle (the cell needs ~20 DIIS steps);
- ``ot_max_scf_1``: OT with MAX_SCF 1;
- ``diag_broyden``: diagonalisation with the default Broyden mixing (ALPHA 0.4), which xTB's
  charges can diverge under;
- ``diag_alpha_0.8``: diagonalisation with ALPHA 0.8 and MAX_SCF 20.

For each: whether the first attempt converged, whether the ladder did, which rung, how many
rungs were tried, and the energy difference to the same cell labelled with the normal OT
settings (a recovered label must be the same label). Writes benchmarks/cp2k_ladder.json (beside
this script, with the machine and date).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import summary_path, write_summary  # noqa: E402

CASES = {
    "ot_max_scf_3": {"max_scf": 3, "outer_max_scf": 1},
    "ot_max_scf_1": {"max_scf": 1, "outer_max_scf": 1},
    "diag_broyden": {"scf_solver": "diagonalization"},
    "diag_alpha_0.8": {"scf_solver": "diagonalization", "mixing_alpha": 0.8, "max_scf": 20},
}
CELLS = ((0.05, 1), (0.1, 2), (0.2, 3), (0.2, 4))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    from alcgap.reference import Cp2kReference, Cp2kSettings
    from alcgap.structures import beta_cristobalite, rattled

    work = Path(tempfile.mkdtemp(prefix="ladder-"))
    normal = Cp2kReference(Cp2kSettings(method="xtb"), ["Si", "O"], workdir=work / "normal")
    rows = []
    for rattle, seed in CELLS:
        atoms = rattled(beta_cristobalite(), rattle, seed=seed)
        base = normal.compute(atoms)
        for case, settings in CASES.items():
            started = time.time()
            reference = Cp2kReference(Cp2kSettings(method="xtb", **settings), ["Si", "O"], workdir=work / case)
            label = reference.compute(atoms)
            records = label.info.get("recovery", []) if isinstance(label.info, dict) else []
            fault = bool(records) or not label.ok
            rows.append({"case": case, "rattle_A": rattle, "seed": seed, "fault": fault, "ok": label.ok,
                         "recovered_by": label.info.get("recovered_by") if isinstance(label.info, dict) else None,
                         "rungs_tried": len(records), "status": label.status.value,
                         "energy_difference_eV": (label.energy - base.energy) if label.ok and base.ok else None,
                         "seconds": round(time.time() - started, 1)})
            print(json.dumps(rows[-1]), flush=True)
    faults = [r for r in rows if r["fault"]]
    summary = {"cases": len(rows), "faults": len(faults), "recovered": sum(r["ok"] for r in faults),
               "success_rate": round(sum(r["ok"] for r in faults) / len(faults), 3) if faults else None,
               "largest_energy_difference_eV": max((abs(r["energy_difference_eV"]) for r in rows
                                                    if r["energy_difference_eV"] is not None), default=None),
               "rows": rows}
    write_summary(summary_path(__file__), summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
