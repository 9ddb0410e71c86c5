"""What a fitted auxiliary gives the outside: its LAMMPS table and the data of its plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alcgap.auxiliary.fit import AuxFit
from alcgap.auxiliary.table import table_pair_commands

def write_aux_exports(aux: AuxFit, out_dir: Path, species: list[str]) -> Path:
    """The aux's ``pair_style table`` file and the LAMMPS lines that load it (``aux.lammps``)."""
    table = out_dir / "aux.table"
    entries = aux.table.write_lammps(table, species, header=f"from {aux.xml.name}")
    (out_dir / "aux.lammps").write_text("\n".join(table_pair_commands(table, entries)) + "\n")
    return table


def aux_plot_data(aux: AuxFit) -> dict[str, dict]:
    """Per pair: scanned target, core points, the tabulated aux from 0.02 A past the cutoff."""
    out = {}
    for name, target in aux.targets.items():
        r_dense = np.geomspace(0.02, target.r_cut, 400)
        out[name] = {
            "r_scan": target.r_scan, "target": target.scan, "r_core": target.r_core, "core": target.core_energy,
            "r_dense": r_dense, "fit": aux.table.pair(*target.pair).curve(r_dense)[0], "r_cut": target.r_cut,
            "r_scan_min": float(target.r_scan.min()),
        }
    return out
