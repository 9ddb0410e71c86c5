"""The auxiliary is repulsive only: positive and monotone below its cutoff, exactly zero beyond,
and it reproduces the repulsive part of the reference's dimer curves."""

import json
from pathlib import Path

import numpy as np
import pytest

from alcgap.config import AuxSettings
from alcgap.dimers import DimerCurve, cosine_cutoff, dimer_curve, isolated_atom_energies, repulsive_target, scan_grid
from alcgap.fit.aux import aux_pair_curve, fit_repulsive_aux
from alcgap.reference import LammpsReference
from alcgap.reference.base import isolated
from alcgap.structures import pair_key


def assert_repulsive(xml, pair, r_cut, r_lo, step=0.01):
    """Dense-grid properties from the shortest scanned distance to 0.5 A past the cutoff."""
    grid = np.arange(r_lo, r_cut + 0.5, step)
    energy, force = aux_pair_curve(xml, pair, grid)
    below, beyond = grid < r_cut, grid >= r_cut
    assert np.all(energy[beyond] == 0.0) and np.all(force[beyond] == 0.0), "not exactly zero beyond r_cut"
    assert np.all(energy[below] >= 0.0), "negative below r_cut"
    assert np.all(energy[grid < 0.75 * r_cut] > 0.0), "not positive outside the cutoff's transition"
    e = energy[below]
    significant = e[1:] > 1e-6  # the cosine tail ends in numerically zero values
    assert np.all(np.diff(e)[significant] < 0.0), f"{pair} not monotonically decreasing"
    assert np.all(force[below][e > 1e-6] > 0.0), "force not repulsive"
    return grid, energy


def assert_reproduces_reference(xml, pair, r_cut, width, reference, atom_energies, distances, rel_tol):
    """Against the reference itself at distances that were NOT scanned (between grid points)."""
    def binding(r):
        e = reference.compute(isolated(pair[0] + pair[1], [[0, 0, 0], [r, 0, 0]])).energy
        return e - atom_energies[pair[0]] - atom_energies[pair[1]]

    e_cut = binding(r_cut)
    target = np.array([max(binding(r) - e_cut, 0.0) for r in distances]) * cosine_cutoff(distances, r_cut, width)
    fitted, _ = aux_pair_curve(xml, pair, distances)
    strong = target > 1.0
    assert strong.any()
    rel = np.abs(fitted[strong] - target[strong]) / target[strong]
    assert rel.max() < rel_tol, f"{pair}: {rel.max():.2%} at r = {distances[strong][np.argmax(rel)]:.3f} A"
    return rel.max()


def test_sio2_aux_is_repulsive_and_accurate(fitted, small_config, vashishta):
    dimers = json.loads((Path(fitted["run_dir"]) / "dimers.json").read_text())
    aux = small_config.aux
    for name, r_cut in aux.cutoffs.items():
        pair = pair_key(*name.split("-"))
        r_scan = np.array(dimers["curves"]["-".join(pair)]["r"])
        assert r_scan.min() == pytest.approx(aux.scan.r_min)
        assert_repulsive(fitted["aux_xml"], pair, r_cut, r_scan.min())
        midpoints = np.arange(aux.scan.r_min + aux.scan.step / 2, r_cut, 3 * aux.scan.step)
        # between scanned points the fit interpolates: allow 2.5x the tolerance held at the points
        assert_reproduces_reference(fitted["aux_xml"], pair, r_cut, aux.transition_fraction * r_cut, vashishta,
                                    dimers["atom_energies"], midpoints, 2.5 * aux.rel_tolerance)
        check = fitted["aux"]["-".join(pair)]
        assert check["monotone"] and check["max_rel_error"] < aux.rel_tolerance and check["max_beyond_cut"] == 0.0


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
        _, energy = assert_repulsive(fit.xml, pair, r_cut, 2.0)
        assert energy[0] > 1.0  # LJ at 2.0 A is several eV above its value at the cutoff
        midpoints = np.arange(2.01, r_cut, 0.06)
        assert_reproduces_reference(fit.xml, pair, r_cut, settings.transition_fraction * r_cut, reference,
                                    atom_energies, midpoints, 2.5 * settings.rel_tolerance)
    # each descriptor kept its own cutoff: at 2.8 A only Kr-Ar and Kr-Kr still repel
    at_28 = {pair: aux_pair_curve(fit.xml, pair, np.array([2.8]))[0][0] for pair in cutoffs}
    assert at_28[("Ar", "Ar")] == 0.0
    assert at_28[("Kr", "Ar")] > 0.0 and at_28[("Kr", "Kr")] > 0.0


def test_repulsive_target_is_never_negative_and_smoothly_cut():
    r = np.linspace(0.5, 2.0, 31)
    energy = 1.0 / r**6 - 2.0 / r**3  # a binding curve with a minimum at 1.26
    curve = DimerCurve(("Si", "O"), r, energy)
    hard = repulsive_target(curve, 1.1)
    assert np.all(hard >= 0.0) and np.all(hard[r >= 1.1] == 0.0)
    assert hard[0] == pytest.approx(energy[0] - np.interp(1.1, r, energy))
    smooth = repulsive_target(curve, 1.1, width=0.3)
    inner = r <= 0.8
    np.testing.assert_allclose(smooth[inner], hard[inner])
    assert np.all(smooth <= hard) and np.all(smooth[r >= 1.1] == 0.0)
