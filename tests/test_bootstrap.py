"""Each kind of data.bootstrap makes frames of the campaign's species, as many as its rule says,
for a material other than SiO2 (InP, with the Vashishta InP potential shipped with LAMMPS)."""

import ase.io
import numpy as np
import pytest
from ase import units
from ase.calculators.singlepoint import SinglePointCalculator

from alcgap.config import load_fit_config
from alcgap.lammps_module import potentials_dir
from alcgap.structures import min_pair_distances
from alcgap.workflow.stages.bootstrap import frames_of, starting_structure

INP_CRYSTAL = {"bulk": "InP", "crystalstructure": "zincblende", "a": 5.87, "cubic": True}  # 8 atoms


def inp_config(bootstrap: dict, reference: dict | None = None, **data) -> dict:
    return {
        "species": ["In", "P"],
        "seed": 4,
        "reference": reference or {"kind": "cp2k"},  # bootstrap_frames never calls the reference
        "aux": {"cutoffs": {"In-In": 1.7, "In-P": 1.6, "P-P": 1.4}},
        "data": {"structure": INP_CRYSTAL, "n_atoms": 64, "bootstrap": bootstrap, **data},
    }


def inp_vashishta() -> list[str]:
    return ["pair_style vashishta", f"pair_coeff * * {potentials_dir() / 'InP.vashishta'} In P"]


@pytest.mark.integration
@pytest.mark.parametrize("given_to", ["bootstrap", "reference"])
def test_classical_bootstrap_runs_the_given_potential(given_to):
    """InP melt-and-quench frames, from data.bootstrap.pair_commands (with a CP2K reference) or
    from a classical reference's own potential (data.bootstrap without pair_commands)."""
    protocol = {"protocol": [{"steps": 300, "t_start": 300, "t_end": 1500}], "sample_every": 100}
    if given_to == "bootstrap":
        config = load_fit_config(inp_config({"kind": "classical", "pair_commands": inp_vashishta(), **protocol}))
    else:
        config = load_fit_config(inp_config({"kind": "classical", **protocol},
                                            reference={"kind": "lammps", "pair_commands": inp_vashishta()}))
    start = starting_structure(config.data)
    frames = frames_of(config)
    assert [f.info["md_step"] for f in frames] == [100, 200, 300]
    for frame in frames:
        assert frame.get_chemical_formula() == "In32P32"
        assert np.allclose(frame.cell.array, start.cell.array)
        moved = frame.positions - start.positions
        moved -= np.round(moved @ np.linalg.inv(start.cell.array)) @ start.cell.array
        assert np.sqrt((moved ** 2).sum(axis=1).mean()) > 0.05  # heated from 300 K: the atoms moved
        assert min_pair_distances(frame)[("In", "P")] > 2.0  # an InP bond is 2.54 A: no collapse


def write_trajectory(path, n_frames: int):
    """n_frames rattled InP cells, labelled with a fake energy that must not survive the reading."""
    crystal = starting_structure(load_fit_config(inp_config({"kind": "rattle"})).data)
    frames = []
    for i in range(n_frames):
        frame = crystal.copy()
        frame.positions += np.random.default_rng(i).normal(0.0, 0.05, frame.positions.shape)
        frame.calc = SinglePointCalculator(frame, energy=-1.0 * i)
        frames.append(frame)
    ase.io.write(path, frames)
    return frames


@pytest.mark.parametrize("rule, kept", [({}, list(range(11))), ({"every": 4}, [0, 4, 8]), ({"count": 3}, [0, 5, 10])])
@pytest.mark.parametrize("suffix", ["xyz", "traj"])
def test_structures_bootstrap_subsamples_a_written_trajectory(tmp_path, rule, kept, suffix):
    path = tmp_path / f"given.{suffix}"
    written = write_trajectory(path, 11)
    config = load_fit_config(inp_config({"kind": "structures", "path": str(path), **rule}))
    frames = frames_of(config)
    assert [f.info["source_frame"] for f in frames] == kept
    for frame, index in zip(frames, kept):
        assert frame.get_chemical_formula() == "In32P32" and frame.calc is None  # the reference labels them
        np.testing.assert_allclose(frame.positions, written[index].positions, atol=1e-6)


def test_structures_bootstrap_refuses_foreign_species_and_too_few_frames(tmp_path):
    path = tmp_path / "given.xyz"
    frames = write_trajectory(path, 3)
    frames[2].symbols[0] = "Ga"
    ase.io.write(path, frames)
    with pytest.raises(ValueError, match=r"data.bootstrap.path: frame 2 .* \['Ga'\]"):
        frames_of(load_fit_config(inp_config({"kind": "structures", "path": str(path)})))
    with pytest.raises(ValueError, match=r"data.bootstrap.count=5: the file holds only 3 frames"):
        frames_of(load_fit_config(inp_config({"kind": "structures", "path": str(path), "count": 5})))


def test_rattle_bootstrap_displaces_by_the_einstein_rule_and_is_seeded():
    bootstrap = {"kind": "rattle", "temperatures": [300, 2000], "spring": 10.0, "copies": 3, "max_strain": 0.03}
    config = load_fit_config(inp_config(bootstrap))
    start = starting_structure(config.data)
    frames = frames_of(config)
    assert len(frames) == 6 and all(f.get_chemical_formula() == "In32P32" for f in frames)
    for temperature in (300, 2000):
        group = [f for f in frames if f.info["rattle_temperature"] == temperature]
        displacements = []
        for frame in group:
            # the displacement from the strained crystal: fractional offsets in the frame's own cell
            offset = frame.get_scaled_positions(wrap=False) - start.get_scaled_positions(wrap=False)
            displacements.append((offset - np.round(offset)) @ frame.cell.array)
            strain = np.linalg.solve(start.cell.array, frame.cell.array) - np.eye(3)
            assert 0 < np.abs(strain).max() <= 0.03 + 1e-12
            np.testing.assert_allclose(strain, strain.T, atol=1e-12)  # a pure strain, no rotation
        sigma = np.sqrt(units.kB * temperature / 10.0)  # classical Einstein oscillator: kB T = k <u^2>
        assert len(group) == 3
        assert np.std(displacements) == pytest.approx(sigma, rel=0.1)  # 576 Gaussian components
    again = frames_of(config)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(frames, again))
    other = frames_of(load_fit_config(inp_config({**bootstrap, "seed": 5})))
    assert not np.allclose(frames[0].positions, other[0].positions)
