"""The fit entry point end to end: run directory, metrics, plots, reproducible inputs."""

import json
from pathlib import Path

import ase.io
import numpy as np
import yaml

from alcgap.config import load_fit_config


def test_run_directory_holds_models_metrics_and_plots(fitted):
    run = Path(fitted["run_dir"])
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["models"]) == {"composite", "traditional"}
    for png in ("parity.png", "aux_curves.png", "short_range.png"):
        path = run / "plots" / png
        assert path.exists() and path.stat().st_size > 10_000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("aux/aux.xml", "aux/aux.table", "aux/aux.lammps", "train.xyz", "test.xyz", "dimers.json", "fit.yaml"):
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
    run = Path(fitted["run_dir"])
    composite = (run / "composite" / "gap_fit.cmd").read_text()
    traditional = (run / "traditional" / "gap_fit.cmd").read_text()
    assert "core_param_file=" in composite and "export_covariance=T" in composite
    assert "core_param_file" not in traditional and "export_covariance=T" in traditional
    assert "n_max=6 l_max=6 cutoff=4.0" in composite
    aux = (run / "aux" / "gap_fit.cmd").read_text()
    assert aux.count("add_species=F") == 3


def test_frozen_config_reloads_to_the_same_config(fitted, small_config):
    frozen = yaml.safe_load((Path(fitted["run_dir"]) / "fit.yaml").read_text())
    assert load_fit_config(frozen) == small_config
