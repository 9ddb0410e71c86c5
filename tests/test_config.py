"""Bad input fails early, with a message that names the field and the fix."""

import sys
from pathlib import Path

import pytest
import yaml

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
    from alcgap.workflow.fitjob import run_fit

    monkeypatch.setattr(sys, "executable", str(tmp_path / "nobin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GapFitNotFound, match="pip install quippy-ase"):
        run_fit(small_config, tmp_path / "run")
    assert not (tmp_path / "run" / "dimers.json").exists()


# -- another material than SiO2: starting crystal, bootstrap, aux cutoffs -----------------------

#: monoclinic HfO2 (P2_1/c, 12 atoms), the asymmetric unit of Ruh & Corfield (1970)
HFO2 = {"spacegroup": 14, "symbols": ["Hf", "O", "O"],
        "basis": [[0.276, 0.040, 0.208], [0.074, 0.332, 0.347], [0.449, 0.758, 0.480]],
        "cellpar": [5.117, 5.175, 5.291, 90, 99.22, 90]}
HFO2_CAMPAIGN = {"species": ["Hf", "O"], "reference": {"kind": "cp2k"},
                 "aux": {"cutoffs": {"Hf-Hf": 1.7, "Hf-O": 1.2, "O-O": 0.8}}, "data": {"structure": HFO2}}


def test_cp2k_hfo2_without_a_bootstrap_is_refused_naming_the_field_and_the_choices():
    with pytest.raises(ConfigError) as err:
        load_fit_config(HFO2_CAMPAIGN)
    for word in ("data.bootstrap", "kind: classical", "kind: structures", "kind: rattle", "['Hf', 'O']"):
        assert word in str(err.value)


def test_cp2k_hfo2_with_a_rattle_bootstrap_loads_and_builds_its_crystal():
    from alcgap.workflow.stages.bootstrap import starting_structure

    config = load_fit_config({**HFO2_CAMPAIGN, "data": {"structure": HFO2, "n_atoms": 24, "bootstrap": {"kind": "rattle"}}})
    cell = starting_structure(config.data)
    assert cell.get_chemical_formula() == "Hf8O16"
    assert min(cell.get_all_distances(mic=True)[cell.symbols == "Hf"][:, cell.symbols == "O"].ravel()) > 1.9  # Hf-O 2.03 A and up


def test_aux_cutoffs_are_never_silently_sio2s_for_another_material():
    with pytest.raises(ConfigError) as err:
        load_fit_config({**HFO2_CAMPAIGN, "aux": {"scan": {"r_min": 0.5}}, "data": {"structure": HFO2, "bootstrap": {"kind": "rattle"}}})
    for word in ("aux.cutoffs", "SiO2's", "'Hf-Hf', 'Hf-O', 'O-O'"):
        assert word in str(err.value)


@pytest.mark.parametrize(
    "data, words",
    [
        ({"structure": HFO2, "n_atoms": 18}, ["data.n_atoms=18", "12 atoms"]),
        ({"structure": {"bulk": "InP", "crystalstructure": "zincblende", "a": 5.87}}, ["data.structure", "bulk InP", "['In', 'P']"]),
        ({"structure": {"bulk": "Hf", "size": 2}}, ["data.structure.bulk.size", "unknown key"]),
        ({"structure": {"lattice": "fcc"}}, ["data.structure", "{bulk: NAME"]),
        ({"structure": HFO2, "bootstrap": {"kind": "md"}}, ["data.bootstrap", "classical, structures, rattle"]),
        ({"structure": HFO2, "bootstrap": {"kind": "structures", "path": "/no/such.xyz"}}, ["data.bootstrap", "path", "not found"]),
        ({"structure": HFO2, "bootstrap": {"kind": "classical", "types": ["Hf", "O"]}}, ["data.bootstrap", "types", "pair_commands"]),
        ({"structure": HFO2, "bootstrap": {"kind": "classical", "pair_commands": ["pair_style tersoff", "pair_coeff * * /no/HfO.tersoff Hf O"]}},
         ["data.bootstrap.pair_commands", "/no/HfO.tersoff"]),
        ({"structure": HFO2, "bootstrap": {"kind": "rattle"}, "sample_every": 10}, ["data.sample_every", "'rattle'"]),
    ],
)
def test_bad_starting_crystal_or_bootstrap_names_the_field(data, words):
    with pytest.raises(ConfigError) as err:
        load_fit_config({**HFO2_CAMPAIGN, "data": data})
    for word in words:
        assert word in str(err.value)


def test_classical_keys_under_data_are_the_classical_bootstraps():
    """Configs written before data.bootstrap keep their meaning; giving a key in both places is refused."""
    config = load_fit_config({"data": {"sample_every": 7, "timestep": 0.5}})
    assert (config.data.bootstrap.kind, config.data.bootstrap.sample_every, config.data.bootstrap.timestep) == ("classical", 7, 0.5)
    assert load_fit_config(config.model_dump(mode="json")) == config
    with pytest.raises(ConfigError, match="data.sample_every: given twice"):
        load_fit_config({"data": {"sample_every": 7, "bootstrap": {"sample_every": 8}}})


def test_a_frozen_radius_beyond_the_carving_radius_is_refused():
    from alcgap.config import load_campaign_config
    from alcgap.workflow.stages.explore import pick_settings

    demo = Path(__file__).parents[1] / "configs" / "sio2-quick.yaml"
    config = load_campaign_config(demo)
    assert config.label.relax_boundary and pick_settings(config).frozen_radius == pytest.approx(3.0)  # SOAP cutoff 4 A less 1 A
    raw = yaml.safe_load(demo.read_text())
    with pytest.raises(ConfigError) as err:
        load_campaign_config({**raw, "label": {"carve_radius": 4.0, "carve_frozen_radius": 4.5}})
    assert "label.carve_frozen_radius" in str(err.value) and "at most the carving radius" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Bad input through `alcgap run`: refused in seconds, naming the field and the fix, writing nothing

def _too_close_structure(path):
    from ase.io import write

    from alcgap.structures import beta_cristobalite

    atoms = beta_cristobalite()
    atoms.positions[1] = atoms.positions[0] + [0.2, 0.0, 0.0]
    write(path, atoms)
    return str(path)


@pytest.mark.parametrize(
    "case, words",
    [
        ("yaml", ["not valid YAML", "line 4", "column 11"]),
        ({"distances": {"flag": {"Si-O": -1.3}}}, ["distances.flag", "'Si-O'", "0 < d"]),
        ({"distances": {"flag": {"Si-O": 1.3, "O-Si": 1.4}}}, ["distances.flag", "same pair"]),
        ("too_close", ["data.structure", "far too close", "0.200 A"]),
        ({"reference": {"kind": "cp2k", "basis_set": "NO-SUCH-BASIS"}}, ["reference.basis_set", "'NO-SUCH-BASIS'"]),
        ("site", ["provider", "type"]),
        ({"potential": "plain", "traditional": True}, ["traditional", "plain campaign", "potential: composite"]),
        ({"potential": "no-aux"}, ["potential", "'composite' or 'plain'"]),
    ],
    ids=["yaml", "negative-flag", "duplicate-pair", "overlapping-start", "cp2k-basis", "site-provider", "plain-traditional",
         "unknown-potential"],
)
def test_bad_campaign_input_is_refused_before_any_file(tmp_path, capsys, case, words):
    import shutil

    import yaml

    from alcgap.cli import main

    path, site = tmp_path / "campaign.yaml", "local"
    base = {"species": ["Si", "O"], "reference": {"kind": "lammps"}}
    if case == "yaml":
        path.write_text("species: [Si, O]\nreference:\n  kind lammps\n  walltime: 10\n")
    elif case == "too_close":
        path.write_text(yaml.safe_dump({**base, "data": {"structure": _too_close_structure(tmp_path / "start.xyz")}}))
    elif case == "site":
        path.write_text(yaml.safe_dump(base))
        site = str(tmp_path / "site.yaml")
        (tmp_path / "site.yaml").write_text("executors:\n  serial:\n    provider: {type: nosuch}\n")
    else:
        if "reference" in case and shutil.which("cp2k.psmp") is None:
            pytest.skip("cp2k.psmp not on PATH (Debian: apt-get install cp2k)")
        path.write_text(yaml.safe_dump({**base, **case}))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--site", site, "--run-dir", str(run_dir)]) == 2
    message = capsys.readouterr().err
    for word in words:
        assert word in message, message
    assert "Traceback" not in message
    assert not run_dir.exists()  # nothing written
