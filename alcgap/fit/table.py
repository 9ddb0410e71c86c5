"""The auxiliary as a LAMMPS ``pair_style table`` file, to overlay it on any other potential."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from alcgap.fit.aux import aux_pair_curve
from alcgap.structures import Pair, pair_name


def table_keyword(pair: Pair) -> str:
    return f"{pair[0]}_{pair[1]}"


def write_lammps_table(
    aux_xml: str | os.PathLike,
    cutoffs: dict[Pair, float],
    path: str | os.PathLike,
    *,
    r_min: float,
    n_points: int = 2000,
) -> Path:
    """Tabulate every pair of the auxiliary from ``r_min`` to its cutoff (Angstrom, eV, eV/A).

    LAMMPS stops with "Pair distance < table inner cutoff" if two atoms come closer than
    ``r_min``: below the scanned range the auxiliary is undefined, so that is the right answer.
    """
    path = Path(path)
    lines = [f"# repulsive auxiliary from {Path(aux_xml).name}, written by alcgap (metal units)", ""]
    for pair, r_cut in cutoffs.items():
        grid = np.linspace(r_min, r_cut, n_points)
        energy, force = aux_pair_curve(aux_xml, pair, grid)
        lines += [table_keyword(pair), f"N {n_points} R {r_min:.10g} {r_cut:.10g}", ""]
        lines += [f"{k + 1} {r:.10f} {e:.12e} {f:.12e}" for k, (r, e, f) in enumerate(zip(grid, energy, force))]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def table_pair_commands(table: str | os.PathLike, cutoffs: dict[Pair, float], types: list[str], n_points: int = 2000) -> list[str]:
    """``pair_style``/``pair_coeff`` lines for the table alone (combine with ``hybrid/overlay``)."""
    commands = [f"pair_style table linear {n_points}"]
    for pair, r_cut in cutoffs.items():
        i, j = sorted((types.index(pair[0]) + 1, types.index(pair[1]) + 1))
        commands.append(f"pair_coeff {i} {j} {Path(table).resolve()} {table_keyword(pair)} {r_cut}")
    return commands


__all__ = ["pair_name", "table_keyword", "table_pair_commands", "write_lammps_table"]
