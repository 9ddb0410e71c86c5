"""The repulsive-only auxiliary potential, in one place.

- :mod:`~alcgap.auxiliary.target`: the target from dimer curves (repulsive part, smooth cutoff,
  clean-up of failed and noisy points) and the screened Coulomb core below the scan;
- :mod:`~alcgap.auxiliary.fit`: the ``distance_2b`` GAP fit, well conditioned by construction,
  with its conditioning recorded;
- :mod:`~alcgap.auxiliary.table`: the one tabulation (calculator, MD, ``pair_style table`` export);
- :mod:`~alcgap.auxiliary.checks`: positive, monotone, zero beyond the cutoff, on the xml and the table.

:mod:`alcgap.dimers` turns a reference into dimer curves; the fit, the calculator and MD only
call this package.
"""

from alcgap.auxiliary.checks import AuxNotRepulsive, PairCheck
from alcgap.auxiliary.fit import AuxFit, fit_repulsive_aux, make_targets, sparse_conditioning
from alcgap.auxiliary.table import LAMMPS_TABLE_POINTS, AuxTable, PairTable, table_coeff_lines, table_pair_commands
from alcgap.auxiliary.target import AuxTargetError, PairTarget, ScreenedCore, cosine_cutoff, pair_target, repulsive_target

__all__ = [
    "AuxFit", "AuxNotRepulsive", "AuxTable", "AuxTargetError", "LAMMPS_TABLE_POINTS", "PairCheck", "PairTable",
    "PairTarget", "ScreenedCore", "cosine_cutoff", "fit_repulsive_aux", "make_targets", "pair_target",
    "repulsive_target", "sparse_conditioning", "table_coeff_lines", "table_pair_commands",
]
