"""MD protocols as data: a list of thermostatted segments (steps, start and end temperature)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Segment(BaseModel):
    """``steps`` MD steps with the thermostat target ramped linearly from ``t_start`` to ``t_end`` (K)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(gt=0)
    t_start: float = Field(gt=0)
    t_end: float = Field(gt=0)
    ensemble: str = Field("nvt", pattern="^(nvt|npt)$")
    #: pressure (bar, LAMMPS metal units) for npt segments
    pressure: float = 1.0


def melt_and_quench(scale: float = 1.0, t_melt: float = 5000.0, t_final: float = 300.0) -> list[Segment]:
    """The paper's protocol: heat from the crystal to 5000 K over 30,000 steps, hold 20,000 steps,
    quench to 300 K over 100,000 steps (1 fs). ``scale`` shortens or lengthens every segment."""
    steps = [max(1, round(n * scale)) for n in (30_000, 20_000, 100_000)]
    return [
        Segment(steps=steps[0], t_start=t_final, t_end=t_melt),
        Segment(steps=steps[1], t_start=t_melt, t_end=t_melt),
        Segment(steps=steps[2], t_start=t_melt, t_end=t_final),
    ]
