"""The fit entry point end to end: run directory, metrics, plots, reproducible inputs."""

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml

from alcgap.config import load_fit_config


def test_run_directory_holds_models_metrics_and_plots(fitted):
    run = Path(fitted["run_dir"])
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["models"]) == {"composite", "traditional"}
    plots = {Path(p).name: Path(p) for p in fitted["plots"]}
    for png in ("parity.png", "aux_curves.png", "short_range.png"):
        path = plots[png]
        assert path.exists() and path.stat().st_size > 10_000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the run directory is a campaign's: iteration 0 (the aux) and one fit, and the fit's data at the top
    for name in ("iter-000/aux/aux.xml", "iter-000/aux/aux.table", "iter-000/aux/aux.lammps", "data.db",
                 "iter-001/fit/composite.xml", "train.xyz", "test.xyz", "dimers.json", "fit.yaml"):
        assert (run / name).exists(), name


def test_held_out_errors_are_sane_and_alike(fitted):
    errors = fitted["test_errors"]
    for name, m in errors.items():
        assert m["n_structures"] >= 5
        assert 0.0 < m["energy_mae"] <= m["energy_rmse"] < 60.0, name  # meV/atom
        assert 0.0 < m["force_rmse"] < 2.0, name  # eV/A, 4000 K Vashishta liquid, little data
    # where MD data never comes close to the aux cutoffs, both fit the same residual
    assert abs(errors["composite"]["energy_mae"] - errors["traditional"]["energy_mae"]) < 0.2 * errors["traditional"]["energy_mae"] + 0.5


def test_train_and_test_are_disjoint(fitted):
    train = ase.io.read(fitted["run_dir"] + "/train.xyz", ":")
    test = ase.io.read(fitted["run_dir"] + "/test.xyz", ":")
    assert len(train) + len(test) == fitted["n_frames"]
    keys = {np.round(a.positions, 6).tobytes() for a in train}
    assert not any(np.round(a.positions, 6).tobytes() in keys for a in test)


def test_gap_fit_commands_are_kept_and_the_composite_uses_the_aux_as_core(fitted):
    composite = (Path(fitted["models"]["composite"]).parent / "gap_fit.cmd").read_text()
    traditional = (Path(fitted["models"]["traditional"]).parent / "gap_fit.cmd").read_text()
    assert "core_param_file=" in composite and "export_covariance=T" in composite
    assert "core_param_file" not in traditional and "export_covariance=T" in traditional
    assert "n_max=6 l_max=6 cutoff=4.0" in composite
    aux = (Path(fitted["aux_xml"]).parent / "gap_fit.cmd").read_text()
    assert aux.count("add_species=F") == 3


def test_frozen_config_reloads_to_the_same_config(fitted, small_config):
    frozen = yaml.safe_load((Path(fitted["run_dir"]) / "fit.yaml").read_text())
    assert load_fit_config(frozen) == small_config


def test_virials_go_in_by_default_where_the_labels_carry_a_stress():
    """gap_fit's virial is -stress x volume (eV); frames without a stress (a dimer in vacuum) get none."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from alcgap.config import MainSettings
    from alcgap.fit.main import VIRIAL_KEY, training_frames
    from alcgap.structures import beta_cristobalite

    crystal = beta_cristobalite()
    stress = np.array([0.01, 0.02, 0.03, 0.004, 0.005, 0.006])  # eV/A^3, ASE Voigt xx yy zz yz xz xy
    crystal.calc = SinglePointCalculator(crystal, energy=-200.0, forces=np.zeros((24, 3)), stress=stress)
    dimer = Atoms("SiO", positions=[[0, 0, 0], [0, 0, 1.6]], cell=[10, 10, 10], pbc=False)
    dimer.calc = SinglePointCalculator(dimer, energy=-5.0, forces=np.zeros((2, 3)))
    assert MainSettings().use_virials is None
    frames = training_frames([crystal, dimer], use_forces=True, use_virials=MainSettings().use_virials)
    virial = np.array(frames[0].info[VIRIAL_KEY].split(), dtype=float).reshape(3, 3)
    volume = crystal.get_volume()
    assert virial[0, 0] == pytest.approx(-0.01 * volume) and virial[2, 2] == pytest.approx(-0.03 * volume)
    assert virial[1, 2] == virial[2, 1] == pytest.approx(-0.004 * volume)
    assert virial[0, 1] == pytest.approx(-0.006 * volume)
    assert VIRIAL_KEY not in frames[1].info
    off = training_frames([crystal, dimer], use_forces=True, use_virials=False)
    assert not any(VIRIAL_KEY in f.info for f in off)


def test_virials_make_the_held_out_stress_right(fitted, tmp_path, small_config):
    """Issue 15: fixed-cell (NVT) data say nothing about the pressure but through the virials.
    The default fit (virials on) must have a clearly lower held-out stress error than the same
    fit with main.use_virials=false, and every held-out pressure within 3.5 GPa of Vashishta's.
    Measured: stress RMSE 1.49 GPa with virials, 3.09 without; pressure 1.93 against 4.23 GPa."""
    from ase import units

    from alcgap.analysis.metrics import error_metrics, parity_data
    from alcgap.calculator import GapCalculator
    from alcgap.fit.main import fit_main_gap

    run = Path(fitted["run_dir"])
    train, test = ase.io.read(run / "train.xyz", ":"), ase.io.read(run / "test.xyz", ":")
    assert fitted["n_train_virials"] == len(train)
    log = (Path(fitted["models"]["composite"]).parent / "gap_fit.log").read_text()
    assert f"Number of target virials (property name: ref_virial) found: {6 * len(train)}" in log  # 6 per frame
    with_virials = fitted["test_errors"]["composite"]
    assert with_virials["n_stress"] == len(test)

    atom_energies = json.loads((run / "dimers.json").read_text())["atom_energies"]
    no_virials = small_config.main.model_copy(update={"use_virials": False})
    xml = fit_main_gap(train, no_virials, atom_energies, tmp_path, aux_xml=fitted["aux_xml"], seed=small_config.seed)
    assert "found: 0" in [line for line in (tmp_path / "gap_fit.log").read_text().splitlines() if "target virials" in line][0]
    without = error_metrics(parity_data(GapCalculator(xml), test))
    print(f"held-out stress RMSE {with_virials['stress_rmse']:.2f} GPa with virials, {without.stress_rmse:.2f} without; "
          f"pressure RMSE {with_virials['pressure_rmse']:.2f} / {without.pressure_rmse:.2f} GPa")
    assert with_virials["stress_rmse"] < 0.65 * without.stress_rmse
    assert with_virials["pressure_rmse"] < 0.65 * without.pressure_rmse
    composite = GapCalculator(fitted["models"]["composite"])
    for frame in test:
        reference = -np.mean(frame.get_stress()[:3]) / units.GPa
        work = frame.copy()
        work.calc = composite
        assert -np.mean(work.get_stress()[:3]) / units.GPa == pytest.approx(reference, abs=3.5)
