"""MD protocols as data: a list of segments (steps, ensemble, start and end temperature), and
the cells they run on (the training cell or a multiple of it).

Temperatures in K, pressures in bar (LAMMPS metal units), times in MD steps.
"""

from __future__ import annotations

from typing import Sequence

from ase import Atoms
from ase.build import find_optimal_cell_shape, make_supercell, niggli_reduce
from pydantic import BaseModel, ConfigDict, Field

from alcgap.structures import most_cubic_repeat


class Segment(BaseModel):
    """``steps`` MD steps with the thermostat target ramped linearly from ``t_start`` to ``t_end`` (K).

    ``nvt``/``npt``: Nose-Hoover thermostat (and barostat) with damping times of ``t_damp`` and
    ``p_damp`` steps. ``nve``: plain velocity Verlet; the temperatures only matter when the
    segment is the first one (initial velocities at ``t_start``).
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(gt=0)
    t_start: float = Field(gt=0)
    t_end: float = Field(gt=0)
    ensemble: str = Field("nvt", pattern="^(nvt|npt|nve)$")
    #: pressure (bar, LAMMPS metal units) for npt segments
    pressure: float = 1.0
    #: thermostat and barostat damping times, in MD steps
    t_damp: int = Field(100, gt=0)
    p_damp: int = Field(1000, gt=0)

    def target_temperature(self, steps_into_segment: int) -> float:
        fraction = steps_into_segment / self.steps
        return self.t_start + fraction * (self.t_end - self.t_start)


def nvt(steps: int, temperature: float, t_end: float | None = None) -> Segment:
    """Nose-Hoover NVT at ``temperature`` (K), ramped to ``t_end`` if given."""
    return Segment(steps=steps, t_start=temperature, t_end=t_end or temperature, ensemble="nvt")


def npt(steps: int, temperature: float, pressure: float = 1.0, t_end: float | None = None) -> Segment:
    """Nose-Hoover NPT (isotropic) at ``temperature`` (K) and ``pressure`` (bar)."""
    return Segment(steps=steps, t_start=temperature, t_end=t_end or temperature, ensemble="npt", pressure=pressure)


def nve(steps: int, temperature: float = 300.0) -> Segment:
    """Microcanonical steps; ``temperature`` sets the initial velocities if this segment comes first."""
    return Segment(steps=steps, t_start=temperature, t_end=temperature, ensemble="nve")


def scaled(segments: Sequence[Segment], scale: float) -> list[Segment]:
    """The same protocol with every segment's length multiplied by ``scale`` (at least one step)."""
    return [segment.model_copy(update={"steps": max(1, round(segment.steps * scale))}) for segment in segments]


def total_steps(segments: Sequence[Segment]) -> int:
    return sum(segment.steps for segment in segments)


def melt_and_quench(scale: float = 1.0, t_melt: float = 5000.0, t_final: float = 300.0) -> list[Segment]:
    """The paper's protocol: heat from the crystal to 5000 K over 30,000 steps, hold 20,000 steps,
    quench to 300 K over 100,000 steps (1 fs). ``scale`` shortens or lengthens every segment."""
    steps = [max(1, round(n * scale)) for n in (30_000, 20_000, 100_000)]
    return [
        Segment(steps=steps[0], t_start=t_final, t_end=t_melt),
        Segment(steps=steps[1], t_start=t_melt, t_end=t_melt),
        Segment(steps=steps[2], t_start=t_melt, t_end=t_final),
    ]


def scaled_cell(atoms: Atoms, factor: int, *, shape: str = "cubic") -> Atoms:
    """A supercell of ``atoms`` holding ``factor`` times its atoms (the paper's "10x" cells).

    ``shape="cubic"``: the integer supercell matrix of determinant ``factor`` whose cell is
    closest to a cube (ASE ``find_optimal_cell_shape``), Niggli-reduced so that LAMMPS' tilt
    limits hold; a 216-atom cell x10 becomes ~34 x 34 x 30 A instead of a 5 x 2 x 1 slab.
    ``shape="repeat"``: plain repetitions along the cell vectors, as cubic as integers allow.
    """
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    if shape == "repeat" or factor == 1:
        return atoms.repeat(most_cubic_repeat(factor))
    if shape != "cubic":
        raise ValueError(f"shape={shape!r}: use 'cubic' or 'repeat'")

    matrix = find_optimal_cell_shape(atoms.cell, factor, "sc")
    bigger = make_supercell(atoms, matrix)
    niggli_reduce(bigger)
    bigger.wrap()
    return bigger


#: a Nose-Hoover thermostat trails a ramp by about its damping time: the damping of an
#: exploration run is at most this fraction of its heating (and never below MIN_DAMP steps)
DAMP_FRACTION_OF_HEATING = 0.1
MIN_DAMP = 10


def exploration_protocol(steps: int, t_melt: float, *, heat_fraction: float = 0.2, hold_fraction: float = 0.4,
                         t_start: float = 300.0, t_damp: int = 100) -> list[Segment]:
    """Heat from ``t_start`` to ``t_melt``, hold there for ``hold_fraction`` of the ``steps``, quench.

    Exploration is about the melt: a run labelled 4000 K must spend its stated share at 4000 K.
    With the paper's shape shortened 250-fold (120 heating steps, 100-step damping) the thermostat
    never caught up: the demo's "4000 K" runs peaked at 2512 K. Here the damping is at most
    ``DAMP_FRACTION_OF_HEATING`` of the heating steps, and the driver records the temperature
    each segment actually reached (``MDResult.segment_temperatures``).
    """
    heat = max(1, round(steps * heat_fraction))
    hold = max(1, round(steps * hold_fraction))
    quench = max(1, steps - heat - hold)
    damp = int(min(t_damp, max(MIN_DAMP, DAMP_FRACTION_OF_HEATING * heat)))
    return [
        Segment(steps=heat, t_start=t_start, t_end=t_melt, t_damp=damp),
        Segment(steps=hold, t_start=t_melt, t_end=t_melt, t_damp=damp),
        Segment(steps=quench, t_start=t_melt, t_end=t_start, t_damp=damp),
    ]


def reached_temperature(segment_temperatures: Sequence[dict], t_melt: float) -> dict:
    """How close the hold segment came to the melt temperature (from ``MDResult``)."""
    holds = [s for s in segment_temperatures if s.get("t_start") == s.get("t_end") == t_melt and s.get("n")]
    if not holds:
        return {"target": t_melt, "hold_mean": None, "ratio": None}
    mean = sum(s["mean"] * s["n"] for s in holds) / sum(s["n"] for s in holds)
    return {"target": t_melt, "hold_mean": round(mean, 1), "ratio": round(mean / t_melt, 3)}
