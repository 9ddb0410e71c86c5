"""Classical MD in LAMMPS: bootstrap trajectories from a cheap potential (through the one MD driver)."""

from __future__ import annotations

from typing import Sequence

from ase import Atoms

from alcgap.md.forces import ForceField
from alcgap.md.lammps import run_md
from alcgap.md.protocols import Segment
from alcgap.reference._lammps import lammps_types


def run_classical_md(
    atoms: Atoms,
    pair_commands: Sequence[str],
    species: Sequence[str],
    segments: Sequence[Segment],
    *,
    timestep: float = 1.0,
    sample_every: int = 100,
    seed: int = 1,
    charges: dict[str, float] | None = None,
) -> list[Atoms]:
    """Run thermostatted segments with a classical potential; return a frame every ``sample_every`` steps.

    ``timestep`` in fs; temperatures in K; Nose-Hoover thermostat (damping 100 steps) for nvt,
    with an isotropic barostat (1000 steps) for npt. Frames carry ``info["md_step"]``,
    ``info["md_target_temperature"]`` and ``info["md_segment"]``; positions only (no energies,
    forces or velocities: they are for labelling).

    ``species`` is the LAMMPS type order (type 1 first); when the ``pair_coeff`` lines name
    elements it must repeat their order (:func:`~alcgap.reference._lammps.lammps_types`, the rule
    of the reference). ``charges``: a fixed charge (e) per species for a Coulomb model.
    """
    types = lammps_types(pair_commands, species)
    result = run_md(
        atoms,
        ForceField.classical(list(pair_commands), types),
        segments,
        timestep=timestep,
        sample_every=sample_every,
        seed=seed,
        keep_frames=True,
        charges=charges,
    )
    if result.stopped_early:
        raise RuntimeError(f"classical MD stopped early: {result.stop_reason}")
    frames = []
    for frame in result.frames:
        bare = Atoms(frame.get_chemical_symbols(), positions=frame.positions, cell=frame.cell, pbc=True)
        bare.info = {key: frame.info[key] for key in ("md_step", "md_target_temperature", "md_segment")}
        frames.append(bare)
    return frames
