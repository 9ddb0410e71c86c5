"""The auxiliary is repulsive only: positive and monotone from r -> 0 (the xml from its core
floor) to its cutoff, exactly zero beyond, well conditioned by construction, and it reproduces the
repulsive part of the reference's dimer curves."""

import json
from pathlib import Path

import numpy as np
import pytest
from quippy.potential import Potential

from alcgap.auxiliary import AuxTable, AuxTargetError, ScreenedCore, cosine_cutoff, fit_repulsive_aux, pair_target, repulsive_target
from alcgap.config import AuxSettings
from alcgap.dimers import DimerCurve, dimer_curve, isolated_atom_energies, pair_curve, scan_grid
from alcgap.reference import LammpsReference
from alcgap.reference.base import isolated
from alcgap.structures import pair_key

#: a double-precision Cholesky needs cond << 1e16; the recipe gives ~1e3-1e4 whatever the data
CONDITION_BOUND = 1e6


def xml_curve(xml, pair, r):
    return pair_curve(Potential(param_filename=str(xml)), pair, r)


def assert_repulsive(energy, force, grid, r_cut, where):
    below, beyond = grid < r_cut - 1e-9, grid > r_cut + 1e-9
    assert np.all(energy[beyond] == 0.0) and np.all(force[beyond] == 0.0), f"{where}: not exactly zero beyond r_cut"
    assert np.all(energy[below] >= 0.0), f"{where}: negative below r_cut"
    assert np.all(energy[grid < 0.75 * r_cut] > 0.0), f"{where}: not positive outside the cutoff's transition"
    e = energy[below]
    significant = e[1:] > 1e-6  # the cosine tail ends in numerically zero values
    assert np.all(np.diff(e)[significant] < 0.0), f"{where}: not monotonically decreasing"
    assert np.all(force[below][e > 1e-6] > 0.0), f"{where}: force not repulsive"


def assert_reproduces_reference(xml, pair, r_cut, width, reference, atom_energies, distances, rel_tol):
    """Against the reference itself at distances that were NOT scanned (between grid points)."""
    def binding(r):
        e = reference.compute(isolated(pair[0] + pair[1], [[0, 0, 0], [r, 0, 0]])).energy
        return e - atom_energies[pair[0]] - atom_energies[pair[1]]

    e_cut = binding(r_cut)
    target = np.array([max(binding(r) - e_cut, 0.0) for r in distances]) * cosine_cutoff(distances, r_cut, width)
    fitted, _ = xml_curve(xml, pair, distances)
    strong = target > 1.0
    assert strong.any()
    rel = np.abs(fitted[strong] - target[strong]) / target[strong]
    assert rel.max() < rel_tol, f"{pair}: {rel.max():.2%} at r = {distances[strong][np.argmax(rel)]:.3f} A"
    return rel.max()


def test_sio2_aux_is_repulsive_accurate_and_well_conditioned(fitted, small_config, vashishta):
    dimers = json.loads((Path(fitted["run_dir"]) / "dimers.json").read_text())
    aux = small_config.aux
    conditioning = fitted["aux_fit"]["conditioning"]
    for name, r_cut in aux.cutoffs.items():
        pair = pair_key(*name.split("-"))
        key = "-".join(pair)
        assert min(dimers["curves"][key]["r"]) == pytest.approx(aux.scan.r_min)
        grid = np.arange(aux.core_floor, r_cut + 0.5, 0.002)
        assert_repulsive(*xml_curve(fitted["aux_xml"], pair, grid), grid, r_cut, f"{key} xml")
        midpoints = np.arange(aux.scan.r_min + aux.scan.step / 2, r_cut, 3 * aux.scan.step)
        # between scanned points the fit interpolates: allow 2.5x the tolerance held at the points
        assert_reproduces_reference(fitted["aux_xml"], pair, r_cut, aux.transition_fraction * r_cut, vashishta,
                                    dimers["atom_energies"], midpoints, 2.5 * aux.rel_tolerance)
        check = fitted["aux"][key]
        assert check["monotone"] and check["max_rel_error"] < aux.rel_tolerance and check["max_beyond_cut"] == 0.0
        # what gap_fit Cholesky-factorises is far from singular, by construction of the sparse grid
        k_mm = conditioning["K_MM"][key]
        assert 1.0 < k_mm["condition_number"] < CONDITION_BOUND, k_mm
    assert conditioning["gap_fit_log10_cond_A_inf"] < 12.0


def test_aux_repels_all_the_way_down_in_every_consumer(fitted, small_config):
    """xml (what quippy and pair_style quip load) from the core floor, the table (calculator, MD,
    export) and the composite GapCalculator from 1e-4 A: positive, decreasing, repulsive."""
    from alcgap.calculator import GapCalculator, component_labels

    composite = fitted["models"]["composite"]
    table = AuxTable.from_xml(composite, component_labels(composite)["aux"])
    main = GapCalculator(composite, component="main")
    whole = GapCalculator(composite)
    for name, r_cut in small_config.aux.cutoffs.items():
        pair = pair_key(*name.split("-"))
        grid = np.arange(small_config.aux.core_floor, r_cut + 0.3, 0.002)
        e_xml, f_xml = xml_curve(fitted["aux_xml"], pair, grid)
        assert_repulsive(e_xml, f_xml, grid, r_cut, f"{name} xml")
        assert e_xml[0] > 1e3 * e_xml[grid < small_config.aux.scan.r_min][-1] / 1e3 > 0
        deep = np.concatenate([np.geomspace(1e-4, 0.05, 40)[:-1], grid])
        assert_repulsive(*table.pair(*pair).curve(deep), deep, r_cut, f"{name} table")
        # the composite calculator's aux part is the table: composite - main on the same dimers
        r = np.array([0.02, 0.05, 0.2, 0.45, 0.5 * r_cut + 0.2])
        aux_part = pair_curve(whole, pair, r)[0] - pair_curve(main, pair, r)[0]
        np.testing.assert_allclose(aux_part, table.pair(*pair).curve(r)[0], rtol=1e-7)
        assert np.all(np.diff(aux_part) < 0)
        # the table above the core's join is the xml itself
        above = grid[(grid > table.pair(*pair).r_join) & (grid < r_cut)]
        np.testing.assert_allclose(table.pair(*pair).curve(above)[0], xml_curve(fitted["aux_xml"], pair, above)[0], rtol=1e-7, atol=1e-9)


def test_aux_forces_are_minus_the_derivative(fitted):
    r = np.linspace(0.06, 1.05, 40)
    h = 3e-5
    _, force = xml_curve(fitted["aux_xml"], ("Si", "O"), r)
    e_plus, _ = xml_curve(fitted["aux_xml"], ("Si", "O"), r + h)
    e_minus, _ = xml_curve(fitted["aux_xml"], ("Si", "O"), r - h)
    np.testing.assert_allclose(force, -(e_plus - e_minus) / (2 * h), rtol=1e-4, atol=1e-6)
    table = AuxTable.from_xml(fitted["aux_xml"]).pair("Si", "O")
    r = np.linspace(0.002, 1.05, 60)  # through the analytic core too
    h = np.minimum(3e-5, 1e-3 * r)  # the core is ~1/r: the step must shrink with r
    _, force = table.curve(r)
    np.testing.assert_allclose(force, -(table.curve(r + h)[0] - table.curve(r - h)[0]) / (2 * h), rtol=1e-4, atol=1e-6)


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
        grid = np.arange(settings.core_floor, r_cut + 0.5, 0.002)
        energy, force = xml_curve(fit.xml, pair, grid)
        assert_repulsive(energy, force, grid, r_cut, f"{pair} xml")
        assert np.interp(2.0, grid, energy) > 1.0  # LJ at 2.0 A is several eV above its value at the cutoff
        midpoints = np.arange(2.01, r_cut, 0.06)
        assert_reproduces_reference(fit.xml, pair, r_cut, settings.transition_fraction * r_cut, reference,
                                    atom_energies, midpoints, 2.5 * settings.rel_tolerance)
        assert fit.conditioning["K_MM"]["-".join(pair)]["condition_number"] < CONDITION_BOUND
    # each descriptor kept its own cutoff: at 2.8 A only Kr-Ar and Kr-Kr still repel
    at_28 = {pair: xml_curve(fit.xml, pair, np.array([2.8]))[0][0] for pair in cutoffs}
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


def test_screened_core_matches_and_repels():
    core = ScreenedCore.through(0.5, 800.0, 0.52, 650.0)
    np.testing.assert_allclose(core.energy(np.array([0.5, 0.52])), [800.0, 650.0])
    r = np.geomspace(1e-4, 0.5, 200)
    assert np.all(np.diff(core.energy(r)) < 0) and np.all(core.derivative(r) < 0)
    slope = ScreenedCore.matching(0.5, 800.0, -9000.0)
    assert slope.energy(0.5) == pytest.approx(800.0) and slope.derivative(0.5) == pytest.approx(-9000.0)
    soft = ScreenedCore.through(0.5, 10.0, 0.52, 9.9)  # flatter than 1/r: b < 0, still decreasing below r0
    assert soft.b < 0 and soft.decreasing_up_to() > 0.52 and np.all(soft.derivative(r) < 0)


def _born_mayer_curve(r, failed=None, noise=None, a=2000.0, length=0.12, attraction=1.0):
    energy = a * np.exp(-r / length) - attraction / r**2
    if noise is not None:
        energy = energy + noise
    return DimerCurve(("Si", "O"), r, energy, dict(failed or {}))


def test_failed_and_noisy_dimer_points_are_recorded_or_refused():
    settings = AuxSettings(cutoffs={"Si-O": 1.1})
    r = scan_grid(0.5, 1.1, 0.02, 0.3)
    # a failed point far out and one inside: dropped, recorded, the fit goes on
    keep = ~np.isin(np.round(r, 4), [0.7, 1.36])
    curve = _born_mayer_curve(r[keep], failed={0.7: "scf_not_converged: ...", 1.36: "scf_not_converged: ..."})
    target = pair_target(curve, 1.1, settings, core_step=0.02, core_down_to=0.01)
    assert set(target.record()["failed_reference_points"]) == {"0.7000", "1.3600"}
    assert 0.01 <= target.r_core.min() < 0.03 and target.r_core.max() == pytest.approx(0.48)
    # a hole of failed points inside the cutoff: refused with the pair and the distances
    hole = ~((r > 0.6) & (r < 0.75))
    with pytest.raises(AuxTargetError, match=r"Si-O.*between 0\.600 and 0\.760"):
        pair_target(_born_mayer_curve(r[hole], failed={0.62: "x"}), 1.1, settings, core_step=0.02, core_down_to=0.01)
    # the short end failed: refused, naming aux.scan.r_min
    with pytest.raises(AuxTargetError, match="aux.scan.r_min"):
        pair_target(_born_mayer_curve(r[r > 0.58]), 1.1, settings, core_step=0.02, core_down_to=0.01)
    # SCF noise of a few meV: projected onto a decreasing curve and recorded
    clean = _born_mayer_curve(r).energies
    i = int(np.argmin(np.abs(r - 1.0)))
    rise = np.zeros_like(r)
    rise[i] = clean[i - 1] - clean[i] + 0.005  # E(1.00 A) 5 meV above E(0.98 A)
    small = _born_mayer_curve(r, noise=rise)
    cleaned = pair_target(small, 1.1, settings, core_step=0.02, core_down_to=0.01)
    inside = cleaned.r_scan < 1.1 - cleaned.width
    assert np.all(np.diff(cleaned.scan[inside]) < 0) and 0 < cleaned.max_noise_correction < settings.noise_floor
    # a curve that rises by 0.5 eV inside the cutoff: refused, naming where
    bump = np.where(np.isclose(r, 0.9), 0.5, 0.0)
    with pytest.raises(AuxTargetError, match=r"Si-O: the dimer curve rises with r near 0\.(88|90)"):
        pair_target(_born_mayer_curve(r, noise=bump), 1.1, settings, core_step=0.02, core_down_to=0.01)
    # no repulsion at all (cutoff beyond where the curve repels): refused
    with pytest.raises(AuxTargetError, match="Si-O"):
        pair_target(DimerCurve(("Si", "O"), r, -np.exp(-r)), 1.1, settings, core_step=0.02, core_down_to=0.01)


def test_fit_from_a_noisy_curve_is_still_repulsive(tmp_path):
    settings = AuxSettings(cutoffs={"Si-O": 1.1})
    r = scan_grid(0.5, 1.1, 0.02, 0.3)
    soft = {"a": 0.5, "length": 0.6, "attraction": 0.001}  # flat: steps of 2-3 meV, which SCF noise can reverse
    clean = _born_mayer_curve(r, **soft).energies
    noise = np.zeros_like(r)
    for r_noisy in (0.9, 1.0):  # two points 2 meV above their shorter neighbour (SCF noise)
        i = int(np.argmin(np.abs(r - r_noisy)))
        noise[i] = clean[i - 1] - clean[i] + 0.002
    curve = _born_mayer_curve(r, noise=noise, **soft)
    fit = fit_repulsive_aux({("Si", "O"): curve}, {("Si", "O"): 1.1}, settings, tmp_path)
    grid = np.arange(0.05, 1.4, 0.002)
    assert_repulsive(*xml_curve(fit.xml, ("Si", "O"), grid), grid, 1.1, "noisy Si-O xml")
    assert fit.record()["pairs"]["Si-O"]["target"]["max_noise_correction_eV"] > 0
