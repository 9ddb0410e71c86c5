"""Settings of the survival test (:mod:`alcgap.survival`), the last gate an iteration passes
before the campaign may stop (``judge.survival``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from alcgap.settings import Strict


class SurvivalJudgeSettings(Strict):
    """The survival test of an iteration that passed every other gate (alcgap.survival,
    project issue 17): hot NVT runs of the iteration's deployed model from the training cell
    (1x, at its density), one per temperature and seed, at ``explore.timestep`` with the explore
    section's adaptive step (``max_displacement``, ``max_energy_change``). The iteration converges
    only when enough of them hold."""

    temperatures: list[float] = Field(default_factory=lambda: [6000.0], description=(
        "NVT temperatures (K), one run per temperature and seed: hotter than exploration, to push "
        "the model towards the short range where a GAP without its aux has a hole"))
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], description=(
        "velocity seeds (one run per seed and temperature; the same for every iteration's model)"))
    steps: int = Field(2000, ge=10, description=(
        "MD steps per run (each at most ``explore.timestep`` fs; shorter where the adaptive step cuts it)"))
    min_held: float = Field(1.0, gt=0.0, le=1.0, description=(
        "fraction of the runs that must hold for the iteration to converge (1: every run), in (0, 1]"))
    held_fraction: float = Field(0.9, gt=0.0, le=2.0, description=(
        "a run holds when it survived (no collapse, lost atoms or non-finite energy) and no pair "
        "came closer than this fraction of its aux cutoff (``aux.cutoffs``; the run's "
        "``cutoff_fractions``). 0.9: the aux may be touched, not crossed far; above 1 asks every "
        "pair to stay outside the aux range altogether (Si-O bonds sit at ~1.45 x its 1.1 A)"))

    @field_validator("temperatures")
    @classmethod
    def _positive_temperatures(cls, value: list[float]) -> list[float]:
        if not value or min(value) <= 0.0:
            raise ValueError(f"{value}: give one or more temperatures in K, each > 0, e.g. [6000]")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"{value}: give one or more distinct seeds, e.g. [1, 2, 3] (a repeated seed repeats a run)")
        return value
