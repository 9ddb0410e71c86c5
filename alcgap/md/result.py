"""What an MD run did: the figures every rank returns and rank 0 writes to ``result.json``.

Units: fs, K, bar (LAMMPS metal), eV, Angstrom.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from ase import Atoms


@dataclass
class MDResult:
    """What a run did. ``stopped_early``/``stop_reason`` say why it ended before its last step."""

    force_backend: str
    n_atoms: int
    n_ranks: int
    steps_requested: int
    steps_done: int = 0
    n_frames: int = 0
    n_flagged: int = 0
    stopped_early: bool = False
    stop_reason: str | None = None
    wall_time_s: float = 0.0
    seconds_per_step: float = 0.0
    #: shortest distance seen per species pair over the monitored steps (Angstrom)
    min_distances: dict[str, float] = field(default_factory=dict)
    #: largest per-atom predicted variance seen on the monitored steps (eV^2)
    max_variance: float | None = None
    #: the clustering verdict on every monitored step: the first step judged clustered (None:
    #: every monitored frame clean), its finding, and how many monitored frames were clustered
    first_clustered_step: int | None = None
    first_clustered: str | None = None
    n_clustered: int = 0
    n_monitored: int = 0
    #: flagged atoms summed over the monitored frames (in a short pair, over the variance
    #: threshold, or in a cluster): per frame and atom, the measure of how much a model does not know
    n_flagged_atoms: int = 0
    #: temperature actually reached: per protocol segment, its target range and the mean of the
    #: observed temperature (K) over its monitored and sampled steps; and the highest seen
    segment_temperatures: list[dict] = field(default_factory=list)
    peak_temperature: float | None = None
    #: thermo of the last step: temp (K), pe, ke, etotal (eV), press (bar), vol (A^3)
    final_thermo: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    output_dir: str | None = None
    #: the checkpoint step this attempt continued from (None: it ran from step 0)
    resumed_from_step: int | None = None
    #: with an adaptive timestep (max_displacement): the smallest timestep LAMMPS took, seen at
    #: the end of each run chunk (fs), and the time the run covered (fs)
    smallest_timestep_fs: float | None = None
    elapsed_fs: float | None = None
    frames: list[Atoms] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "frames"}

    def write(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))
