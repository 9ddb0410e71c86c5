"""The auxiliary's physical checks, on the xml (what quippy and ``pair_style quip`` load) and on
its table (what the calculator and MD use): positive and strictly decreasing from ``core_floor``
(and, for the table, from r -> 0) to r_cut, repulsive forces, exactly zero beyond r_cut, and close
to the target at every scanned distance."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alcgap.dimers import pair_curve
from alcgap.structures import pair_name

#: below this (eV) the cosine tail is numerically zero and monotonicity is not asked
NEGLIGIBLE = 1e-6
CHECK_STEP = 0.002  # Angstrom


class AuxNotRepulsive(RuntimeError):
    """The fitted auxiliary broke a physical property; the message gives the numbers."""


@dataclass
class PairCheck:
    pair: str
    r_cut: float
    #: shortest distance checked on the xml (aux.core_floor) and on the table (analytic core)
    checked_from_xml: float
    checked_from_table: float
    min_below_cut: float
    max_beyond_cut: float
    monotone: bool
    max_rel_error: float
    max_abs_error: float
    #: energy (eV) at the floor and at the first scanned distance
    energy_at_floor: float
    energy_at_scan_start: float
    problems: list[str] = field(default_factory=list)


def curve_problems(where: str, r: np.ndarray, energy: np.ndarray, force: np.ndarray, r_cut: float, inner: float) -> list[str]:
    """Positive below r_cut (strictly below ``inner``), strictly decreasing where not negligible,
    repulsive forces, exactly zero beyond r_cut."""
    problems = []
    below, beyond = r < r_cut - 1e-9, r > r_cut + 1e-9
    e, f = energy[below], force[below]
    if np.any(e < 0.0) or np.any(energy[r < inner] <= 0.0):
        problems.append(f"{where}: not positive below the cutoff (min {e.min():.3g} eV at r = {r[below][np.argmin(e)]:.3f} A)")
    rising = (np.diff(e) >= 0.0) & (e[1:] > NEGLIGIBLE)
    if rising.any():
        problems.append(f"{where}: not monotonically decreasing near r = {np.round(r[below][1:][rising][:5], 3).tolist()} A")
    pulling = (f <= 0.0) & (e > NEGLIGIBLE)
    if pulling.any():
        problems.append(f"{where}: attractive force near r = {np.round(r[below][pulling][:5], 3).tolist()} A")
    if beyond.any() and (np.any(energy[beyond] != 0.0) or np.any(force[beyond] != 0.0)):
        problems.append(f"{where}: not zero beyond r_cut ({np.abs(energy[beyond]).max():.3g} eV)")
    return problems


def check_pair(xml: Path, table, target, settings) -> PairCheck:
    """Check one pair of a fitted auxiliary (``table`` an AuxTable, ``target`` its PairTarget)."""
    from quippy.potential import Potential  # quippy: slow to import

    pair, r_cut = target.pair, target.r_cut
    inner = r_cut - target.width  # inside the cosine transition the target itself goes to zero
    quip = Potential(param_filename=str(xml))
    grid = np.round(np.arange(settings.core_floor, r_cut + settings.scan.beyond_cutoff + CHECK_STEP / 2, CHECK_STEP), 9)
    e_xml, f_xml = pair_curve(quip, pair, grid)
    problems = curve_problems("xml", grid, e_xml, f_xml, r_cut, inner)
    # the table from r -> 0: geometric below the floor, then the same grid
    short = np.geomspace(1e-4, settings.core_floor, 60)[:-1]
    table_grid = np.concatenate([short, grid])
    e_tab, f_tab = table.pair(*pair).curve(table_grid)
    problems += curve_problems("table", table_grid, e_tab, f_tab, r_cut, inner)

    fitted, _ = pair_curve(quip, pair, target.r_scan)
    # where the clean-up moved a noisy point, the reference itself is known only to that much
    noise = target.corrections if target.corrections is not None else 0.0
    error = np.maximum(np.abs(fitted - target.scan) - noise, 0.0)
    strong = target.scan > 1.0
    check = PairCheck(
        pair=pair_name(pair), r_cut=r_cut, checked_from_xml=float(grid[0]), checked_from_table=float(short[0]),
        min_below_cut=float(min(e_xml[grid < r_cut].min(), e_tab[table_grid < r_cut].min())),
        max_beyond_cut=float(np.abs(e_xml[grid > r_cut]).max()) if np.any(grid > r_cut) else 0.0,
        monotone=not any("monoton" in p for p in problems),
        max_rel_error=float((error[strong] / target.scan[strong]).max()) if strong.any() else 0.0,
        max_abs_error=float(error[~strong].max()) if (~strong).any() else 0.0,
        energy_at_floor=float(e_xml[0]), energy_at_scan_start=float(fitted[0]),
    )
    if check.max_rel_error > settings.rel_tolerance:
        worst = target.r_scan[strong][np.argmax(error[strong] / target.scan[strong])]
        problems.append(f"relative error {check.max_rel_error:.2%} > {settings.rel_tolerance:.0%} at r = {worst:.3f} A")
    if check.max_abs_error > settings.abs_tolerance:
        worst = target.r_scan[~strong][np.argmax(error[~strong])]
        problems.append(f"error {check.max_abs_error:.3g} eV > {settings.abs_tolerance} eV at r = {worst:.3f} A (target < 1 eV)")
    check.problems = problems
    return check
