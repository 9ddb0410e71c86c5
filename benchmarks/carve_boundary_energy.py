"""What a carved cell's boundary costs: energy per atom and centre forces against the source frame.

    python benchmarks/carve_boundary_energy.py [--pushes 0 0.1 0.2 0.3 0.5] [--radius 4.0] [--frozen 3.0]

A 240-atom SiO2 frame (beta-cristobalite x10, Vashishta melt 300 -> 5000 -> 300 K, 1400 steps of
1 fs), one Si-O bond near its middle shortened by each push (A), carved around the pair with
the default settings (radius 4 A). The Vashishta reference labels the frame and the carved cell,
as cut and with its boundary relaxed (alcgap.explore.carve.relax_boundary: atoms beyond 3 A of the pair,
the campaign's default frozen radius, relaxed by the Vashishta potential standing in for the
explored model); printed per push: atoms carved, energy per atom of each, the same less the
pushed pair's own energy (what the push costs the whole frame), and the largest difference of
the two centre atoms' forces. Writes benchmarks/carve_boundary_energy.json (beside this script,
with the machine and date; other radii: carve_boundary_energy_r<radius>_f<frozen>.json).
"""

from __future__ import annotations

import argparse

import numpy as np
from ase.geometry import find_mic
from matscipy.neighbours import neighbour_list

from alcgap.explore.carve import CarveSettings, carve, relax_boundary
from alcgap.provenance import info_indices
from alcgap.md.classical import run_classical_md
from alcgap.md.protocols import Segment, scaled_cell
from alcgap.reference import LammpsReference, vashishta_sio2_commands
from alcgap.structures import beta_cristobalite

from provenance import summary_path, write_summary

OUT = summary_path(__file__)


def label(reference, atoms):
    plain = atoms.copy()
    plain.info = {}
    for key in [k for k in plain.arrays if k not in ("numbers", "positions")]:
        del plain.arrays[key]
    return reference.compute(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--radius", type=float, default=4.0, help="carving radius (A)")
    parser.add_argument("--frozen", type=float, default=3.0, help="frozen radius of the relaxation (A)")
    args = parser.parse_args()
    segments = [Segment(steps=400, t_start=300, t_end=5000), Segment(steps=400, t_start=5000, t_end=5000),
                Segment(steps=600, t_start=5000, t_end=300)]
    frame = run_classical_md(scaled_cell(beta_cristobalite(), 10), vashishta_sio2_commands(), ["Si", "O"],
                             segments, timestep=1.0, sample_every=1400, seed=11)[-1]
    reference = LammpsReference.vashishta_sio2()
    i, j = neighbour_list("ij", frame, 1.9)
    middle = frame.cell.cartesian_positions(np.full(3, 0.5))
    bonds = [(int(a), int(b)) for a, b in zip(i, j) if frame.numbers[a] == 14 and frame.numbers[b] == 8]
    gaps, _ = find_mic(frame.positions[[b for _, b in bonds]] - middle, frame.cell, frame.pbc)
    si, o = bonds[int(np.argmin(np.linalg.norm(gaps, axis=1)))]
    relaxer = reference.calculator()
    unpushed = label(reference, frame).energy
    rows = []
    for push in args.pushes:
        pushed = frame.copy()
        bond, _ = find_mic(pushed.positions[si] - pushed.positions[o], pushed.cell, pushed.pbc)
        pushed.positions[o] += push * bond / np.linalg.norm(bond)
        cell = carve(pushed, [si, o], CarveSettings(radius=args.radius))
        whole, part = label(reference, pushed), label(reference, cell)
        relaxed = relax_boundary(pushed, cell, relaxer, args.frozen)
        healed = label(reference, relaxed)
        event = whole.energy - unpushed
        centres = info_indices(cell, "centre_atoms")
        rows.append({"push_A": push, "carved_atoms": len(cell), "frame_eV_atom": whole.energy / len(pushed),
                     "carved_eV_atom": part.energy / len(cell), "relaxed_eV_atom": healed.energy / len(cell),
                     "event_eV": event, "carved_less_event_eV_atom": (part.energy - event) / len(cell),
                     "relaxed_less_event_eV_atom": (healed.energy - event) / len(cell),
                     "relax": relaxed.info["carve_relax"],
                     "centre_force_diff_eV_A": float(np.abs(part.forces[centres] - whole.forces[[si, o]]).max()),
                     "relaxed_centre_force_diff_eV_A": float(np.abs(healed.forces[centres] - whole.forces[[si, o]]).max())})
        print(" ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()), flush=True)
    out = OUT if (args.radius, args.frozen) == (4.0, 3.0) else summary_path(__file__, f"_r{args.radius}_f{args.frozen}")
    print(f"written {write_summary(out, {'radius_A': args.radius, 'frozen_A': args.frozen, 'rows': rows})}")


if __name__ == "__main__":
    main()
