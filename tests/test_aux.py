"""The auxiliary is repulsive only: positive and monotone below its cutoff, exactly zero beyond."""

import json
from pathlib import Path

import numpy as np
import pytest

from alcgap.config import AuxSettings
from alcgap.dimers import dimer_curve, isolated_atom_energies, repulsive_target, scan_grid
from alcgap.fit.aux import aux_pair_curve, fit_repulsive_aux
from alcgap.reference import LammpsReference
from alcgap.structures import pair_key


def _dense_check(xml, pair, r_cut, r_scan, target, rel_tol, abs_tol):
    grid = np.arange(r_scan.min(), r_cut + 0.5, 0.01)
    energy, force = aux_pair_curve(xml, pair, grid)
    below, beyond = grid < r_cut, grid >= r_cut
    # exactly zero at and beyond the cutoff
    assert np.all(energy[beyond] == 0.0) and np.all(force[beyond] == 0.0)
    # never negative; strictly positive outside the smooth-cutoff tail
    assert np.all(energy[below] >= 0.0)
    assert np.all(energy[grid < 0.75 * r_cut] > 0.0)
    # monotonically decreasing wherever it is numerically non-zero
    e = energy[below]
    significant = e[1:] > 1e-6
    assert np.all(np.diff(e)[significant] < 0.0), f"{pair} not monotone"
    # repulsive force everywhere below the cutoff (pushes the second atom outwards)
    assert np.all(force[below][e > 1e-6] > 0.0)
    # reproduces the target
    t = np.interp(grid, r_scan, target)
    strong = t > 1.0
    assert np.max(np.abs(energy[strong] - t[strong]) / t[strong]) < rel_tol
    assert np.max(np.abs(energy[~strong] - t[~strong])) < abs_tol
    return grid, energy, force


def test_sio2_aux_on_a_dense_grid(fitted, small_config):
    dimers = json.loads((Path(fitted["run_dir"]) / "dimers.json").read_text())
    for name, r_cut in small_config.aux.cutoffs.items():
        pair = pair_key(*name.split("-"))
        curve = dimers["curves"]["-".join(pair)]
        r = np.array(curve["r"])
        energy = np.array(curve["energy"])
        target = np.where(r < r_cut, np.maximum(energy - np.interp(r_cut, r, energy), 0.0), 0.0)
        _dense_check(fitted["aux_xml"], pair, r_cut, r, target, small_config.aux.rel_tolerance, small_config.aux.abs_tolerance)


def test_aux_forces_are_minus_the_derivative(fitted):
    r = np.linspace(0.6, 1.05, 40)
    h = 3e-5
    _, force = aux_pair_curve(fitted["aux_xml"], ("Si", "O"), r)
    e_plus, _ = aux_pair_curve(fitted["aux_xml"], ("Si", "O"), r + h)
    e_minus, _ = aux_pair_curve(fitted["aux_xml"], ("Si", "O"), r - h)
    np.testing.assert_allclose(force, -(e_plus - e_minus) / (2 * h), rtol=1e-4, atol=1e-6)


def test_any_species_set_with_per_pair_cutoffs(tmp_path):
    """A Lennard-Jones Ar/Kr mixture: other species, other cutoffs, a much softer curve."""
    reference = LammpsReference(
        ["pair_style lj/cut 8.0", "pair_coeff 1 1 0.0104 3.40", "pair_coeff 2 2 0.0140 3.65", "pair_coeff 1 2 0.0121 3.52"],
        ["Ar", "Kr"],
    )
    settings = AuxSettings(cutoffs={"Ar-Ar": 2.7, "Kr-Ar": 2.85, "Kr-Kr": 3.0}, scan={"r_min": 2.0})
    cutoffs = settings.pair_cutoffs()
    atom_energies = isolated_atom_energies(reference, ["Ar", "Kr"])
    curves = {
        pair: dimer_curve(reference, pair, scan_grid(2.0, r_cut, settings.scan.step, settings.scan.beyond_cutoff), atom_energies)
        for pair, r_cut in cutoffs.items()
    }
    fit = fit_repulsive_aux(curves, cutoffs, settings, tmp_path)
    assert set(fit.checks) == {"Kr-Kr", "Kr-Ar", "Ar-Ar"}
    for pair, r_cut in cutoffs.items():
        _, energy, _ = _dense_check(fit.xml, pair, r_cut, curves[pair].distances, repulsive_target(curves[pair], r_cut),
                                    settings.rel_tolerance, settings.abs_tolerance)
        assert energy[0] > 1.0  # LJ at 2.0 A is several eV above its value at the cutoff
    # each descriptor kept its own cutoff: at 2.8 A only Kr-Ar and Kr-Kr still repel
    at_28 = {pair: aux_pair_curve(fit.xml, pair, np.array([2.8]))[0][0] for pair in cutoffs}
    assert at_28[("Ar", "Ar")] == 0.0
    assert at_28[("Kr", "Ar")] > 0.0 and at_28[("Kr", "Kr")] > 0.0


def test_repulsive_target_is_never_negative():
    from alcgap.dimers import DimerCurve

    r = np.linspace(0.5, 2.0, 31)
    energy = 1.0 / r**6 - 2.0 / r**3  # a binding curve with a minimum at 1.26
    curve = DimerCurve(("Si", "O"), r, energy)
    target = repulsive_target(curve, 1.1)
    assert np.all(target >= 0.0) and np.all(target[r >= 1.1] == 0.0)
    assert target[0] == pytest.approx(energy[0] - np.interp(1.1, r, energy))
