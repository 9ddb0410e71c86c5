"""The two scales of the paper benchmark, as data: every size, length and setting in one place.

``fast``  the classical Vashishta SiO2 potential stands in for DFT; 24-atom cell, melt-and-quench
          runs a fiftieth (training data) and a hundredth (the MD claims) of the paper's length;
          everything runs here, both training modes in under 30 minutes on 2 cores.
``paper`` CP2K PBE, the paper's 216-atom cell and full melt-and-quench (30k + 20k + 100k steps at
          1 fs from 5000 K), 2160-atom 10x cells; written as campaign configs and launched
          through a site on a cluster (see paper_scale.py), never run here.

Units: K, fs, MD steps, Angstrom, meV.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from alcgap.md.protocols import melt_and_quench

#: the training modes: the paper's (energies only) and its conclusion's (energies and forces)
TRAINING_MODES = {"energies": False, "energies+forces": True}
#: folder names of the modes ('+' kept out of paths handed to LAMMPS and gap_fit)
MODE_DIRS = {"energies": "energies", "energies+forces": "energies_forces"}

#: the paper's figures, for the table
PAPER = {
    "mae_composite_meV_atom": 4.7,
    "mae_traditional_meV_atom": 4.8,
    "cost_ratio": 1.05,
}


@dataclass(frozen=True)
class Scale:
    """Sizes of one scale of the benchmark."""

    name: str
    #: atoms of the training cell (beta-cristobalite supercell) and of the 10x cell's base
    n_atoms: int
    #: melt-and-quench of the training data: fraction of the paper's length, sampling, held out
    data_protocol_scale: float
    data_sample_every: int
    test_fraction: float
    n_sparse: int
    #: melt-and-quench of the MD claims (composite, traditional, reference): fraction of the paper's
    md_protocol_scale: float
    md_sample_every: int
    #: the 10x cell's run: multiplier, fraction of the paper's protocol, seeds (1..n)
    big_factor: int
    big_protocol_scale: float
    big_sample_every: int
    big_seeds: int
    #: monitors (min pair distances, variance) every this many MD steps
    monitor_every: int
    #: quenched structure = the frames of the last ``quench_tail`` of the quench segment
    quench_tail: float
    #: RDF bin width (Angstrom); r_max is the largest the cell resolves, at most 6 A
    rdf_bin_width: float
    #: VDOS: displacement (Angstrom, the paper's 0.01), relaxation tolerance (eV/A) and step cap,
    #: Gaussian width (meV), the low-energy window of claim 3 (meV)
    vdos_delta: float = 0.01
    relax_fmax: float = 0.01
    relax_steps: int = 300
    vdos_sigma: float = 3.0
    vdos_e_max: float = 40.0
    #: structures per model whose VDOS is computed (the first seeds); None: every seed
    vdos_seeds: int | None = None
    #: claim 5: cells (atoms) of the interleaved force-call timing, and rounds
    cost_cells: tuple[int, ...] = (24, 216)
    cost_repeats: int = 7
    t_melt: float = 5000.0
    timestep: float = 1.0
    #: claim 2 by the stress test (alcgap.survival): NVT from the crystal at each temperature, one
    #: run per seed and potential, the package's adaptive timestep (at most ``timestep``); the
    #: paper-protocol runs above stay as they are
    stress_temperatures: tuple[float, ...] = (6000.0, 9000.0)
    stress_steps: int = 1000
    #: OpenMP threads of gap_fit
    threads: int = 2
    #: what the report says the reference is
    reference_note: str = "Vashishta SiO2 (LAMMPS) standing in for DFT"
    extra: dict[str, Any] = field(default_factory=dict)

    def fit_config(self, use_forces: bool, seed: int = 1) -> dict:
        """The alcgap fit config (``load_fit_config``) of one training mode; the classical reference."""
        protocol = [s.model_dump() for s in melt_and_quench(self.data_protocol_scale, self.t_melt)]
        return {
            "species": ["Si", "O"],
            "seed": seed,
            "threads": self.threads,
            "reference": {"kind": "lammps"},  # the Vashishta (1990) SiO2 shipped with LAMMPS
            "aux": {"cutoffs": {"Si-Si": 1.6, "Si-O": 1.1, "O-O": 0.8}},  # the paper's
            "main": {"soap": {"n_max": 6, "l_max": 6, "cutoff": 4.0, "n_sparse": self.n_sparse},
                     "use_forces": use_forces},
            "data": {"structure": "beta-cristobalite", "n_atoms": self.n_atoms, "timestep": self.timestep,
                     "sample_every": self.data_sample_every, "protocol": protocol,
                     "test_fraction": self.test_fraction},
            "traditional": True,
        }

    def md_protocol(self, big: bool = False) -> list:
        return melt_and_quench(self.big_protocol_scale if big else self.md_protocol_scale, self.t_melt)

    def as_dict(self) -> dict:
        return asdict(self)


FAST = Scale(
    name="fast",
    n_atoms=24,
    # 1500 + 1000 + 5000 steps, a frame every 20: 375 labelled frames, 225 train / 150 test
    data_protocol_scale=0.05,
    data_sample_every=20,
    test_fraction=0.4,  # the paper: 1500 train, 1000 test
    n_sparse=200,
    # 210 + 140 + 700 steps (heat, hold at 5000 K, quench): a GAP step on 24 atoms costs ~55 ms
    # here, and 2 modes x 2 potentials x 3 seeds of them must fit in the 30 minutes
    md_protocol_scale=0.007,
    md_sample_every=20,
    # 240 atoms, 60 + 40 + 200 steps: ~0.45 s per step here
    big_factor=10,
    big_protocol_scale=0.002,
    big_sample_every=25,
    big_seeds=1,
    monitor_every=20,  # = the sampling: the driver's variance calls (+30%) fall on the same steps
    quench_tail=0.2,
    rdf_bin_width=0.05,
    cost_cells=(24, 216),
)

PAPER_SCALE = Scale(
    name="paper",
    n_atoms=216,
    # 150,000 steps, a frame every 60: 2500 frames, 1500 train / 1000 test as in the paper
    data_protocol_scale=1.0,
    data_sample_every=60,
    test_fraction=0.4,
    n_sparse=400,
    md_protocol_scale=1.0,
    md_sample_every=500,
    big_factor=10,
    big_protocol_scale=1.0,
    big_sample_every=1000,
    big_seeds=3,
    monitor_every=50,
    quench_tail=0.1,
    rdf_bin_width=0.02,
    vdos_sigma=2.0,
    # one structure per model, as the paper: each costs a DFT relaxation (one CP2K call per BFGS
    # step) and 6 x 216 = 1296 displaced single points; raise it if the allocation allows
    vdos_seeds=1,
    cost_cells=(216, 2160),
    stress_steps=2000,
    threads=8,
    reference_note="CP2K PBE (labels, VDOS); structures compared with the classical melt-and-quench that made "
                   "the training data",
)

SCALES = {"fast": FAST, "paper": PAPER_SCALE}
