"""Bad input fails early, with a message that names the field and the fix."""

import sys

import pytest

from alcgap.config import ConfigError, load_fit_config


def test_defaults_are_the_papers():
    config = load_fit_config({})
    assert config.aux.pair_cutoffs() == {("Si", "Si"): 1.6, ("Si", "O"): 1.1, ("O", "O"): 0.8}
    assert (config.main.soap.n_max, config.main.soap.l_max, config.main.soap.cutoff) == (6, 6, 4.0)


def test_pair_order_does_not_matter():
    config = load_fit_config({"aux": {"cutoffs": {"Si-Si": 1.6, "O-Si": 1.1, "O-O": 0.8}}})
    assert config.aux.pair_cutoffs()[("Si", "O")] == 1.1


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"aux": {"cutoffs": {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8, "Si-N": 1.0}}}, ["aux.cutoffs", "'Si-N'", "['N']"]),
        ({"aux": {"cutoffs": {"Si-Si": 1.6, "Si-O": 1.1}}}, ["aux.cutoffs", "O-O"]),
        ({"aux": {"cutoffs": {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8, "O-Si": 1.0}}}, ["twice"]),
        ({"aux": {"cutoffs": {"SiO": 1.1}}}, ["aux.cutoffs", "'A-B'"]),
        ({"aux": {"cutoffs": {"Si-Si": -1.0, "Si-O": 1.1, "O-O": 0.8}}}, ["aux.cutoffs", "Si-Si"]),
        ({"species": ["Si", "Qq"]}, ["species", "'Qq'"]),
        ({"main": {"soap": {"nmax": 4}}}, ["main.soap.nmax", "unknown key"]),
        ({"main": {"soap": {"n_max": 0}}}, ["main.soap.n_max"]),
        ({"data": {"n_atoms": 25}}, ["data.n_atoms", "24"]),
        ({"data": {"structure": "/no/such/file.xyz"}}, ["data.structure", "not found"]),
        ({"aux": {"scan": {"r_min": 0.9}}}, ["aux.scan.r_min", "0.8"]),
    ],
)
def test_bad_config_names_the_field(bad, words):
    with pytest.raises(ConfigError) as err:
        load_fit_config(bad)
    for word in words:
        assert word in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_fit_config(tmp_path / "nope.yaml")


def test_cli_reports_bad_config_and_exits_2(tmp_path, capsys):
    from alcgap.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("aux:\n  cutoffs: {Si-Si: 1.6, Si-O: 1.1, O-O: 0.8, Si-Xe: 1.0}\n")
    assert main(["fit", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    assert "aux.cutoffs" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing ran


def test_empty_training_set_fails_before_gap_fit(tmp_path):
    from alcgap.config import MainSettings
    from alcgap.fit.main import EmptyTrainingSet, fit_main_gap

    with pytest.raises(EmptyTrainingSet, match="empty"):
        fit_main_gap([], MainSettings(), {"Si": 0.0, "O": 0.0}, tmp_path)
    assert not (tmp_path / "gap_fit.log").exists()


def test_missing_gap_fit_fails_before_any_work(tmp_path, monkeypatch, small_config):
    from alcgap.fit.gapfit import GapFitNotFound
    from alcgap.workflow.fit import run_fit

    monkeypatch.setattr(sys, "executable", str(tmp_path / "nobin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GapFitNotFound, match="pip install quippy-ase"):
        run_fit(small_config, tmp_path / "run")
    assert not (tmp_path / "run" / "dimers.json").exists()
