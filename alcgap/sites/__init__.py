"""Site files: where a campaign runs, as YAML that maps one to one onto a ``parsl.Config``.

A site has two executors, with Parsl's own names for every key:

- ``serial``: a ``HighThroughputExecutor`` for the python tasks (fit, select, judge);
- ``mpi``: Parsl's ``MPIExecutor`` (HTEX in MPI mode) for tasks that start MPI ranks (LAMMPS MD,
  CP2K). Its bash apps begin with a launcher such as ``$PARSL_MPI_PREFIX`` and pass
  ``parsl_resource_specification`` = :meth:`Site.resource_specification`.

and the resources of each kind of task (``tasks.md``, ``tasks.cp2k``, ``tasks.fit``). The file is
validated once, at load; a bad key or value raises :class:`SiteError` naming the field and the fix.
See ``sites/README.md`` for the keys and ``sites/*.yaml`` for examples.

The parts: the schema (:mod:`~alcgap.sites.spec`), readable validation errors
(:mod:`~alcgap.sites.messages`), 'auto' sizes and cross-field checks (:mod:`~alcgap.sites.sizing`)
and the Parsl objects (:mod:`~alcgap.sites.parsl_config`). This module is the public API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from alcgap.settings import read_yaml
from alcgap.sites.messages import validation_message
from alcgap.sites.parsl_config import build_config
from alcgap.sites.sizing import resolve_auto, site_problems
from alcgap.sites.spec import MPI, SERIAL, MPITaskSpec, SiteError, SiteSpec, Tasks

__all__ = ["DEFAULT_SITE", "MPI", "SERIAL", "SITES_DIR", "TASK_EXECUTOR", "Site", "SiteError", "SiteSpec",
           "build_config", "check_site", "load_site"]

#: which executor runs each kind of task
TASK_EXECUTOR = {"md": MPI, "cp2k": MPI, "fit": SERIAL, "select": SERIAL, "judge": SERIAL}
#: the site files shipped with alcgap; ``load_site("local", ...)`` finds ``sites/local.yaml``
SITES_DIR = Path(__file__).resolve().parent.parent.parent / "sites"
DEFAULT_SITE = "local"


@dataclass(frozen=True)
class Site:
    """A loaded site: the ``parsl.Config`` and the resolved resources of each kind of task.

    On a local provider the MPI executor has no batch job to take nodes from: each MPI task gets
    one line ``localhost`` of ``<run>/parsl/mpi-nodefile`` (exported as ``PBS_NODEFILE``), so
    ``max_workers_per_block`` lines let that many MPI tasks run at once.
    """

    name: str
    spec: SiteSpec
    config: Any  # parsl.Config
    run_dir: Path

    @property
    def tasks(self) -> Tasks:
        return self.spec.tasks

    def executor(self, kind: str) -> str:
        """The executor label that runs this kind of task ('md', 'cp2k', 'fit', 'select', 'judge')."""
        return TASK_EXECUTOR[kind]

    def ranks(self, kind: str, n_atoms: int | None = None) -> int:
        """The MPI ranks of a task of this kind ('md' or 'cp2k') of ``n_atoms`` atoms."""
        task: MPITaskSpec = getattr(self.spec.tasks, kind)
        return task.ranks_for(n_atoms)

    def resource_specification(self, kind: str, n_atoms: int | None = None) -> dict:
        """``parsl_resource_specification`` for an MPI task of this kind ('md' or 'cp2k') of
        ``n_atoms`` atoms (needed when the site gives ranks by size)."""
        task: MPITaskSpec = getattr(self.spec.tasks, kind)
        ranks = task.ranks_for(n_atoms)
        nodes = task.nodes_for(ranks, self.spec.executors.mpi.provider.cores())
        spec = {"num_nodes": nodes, "ranks_per_node": ranks // nodes, "num_ranks": ranks}
        if task.launcher_options:
            spec["launcher_options"] = task.launcher_options
        return spec

    def mpi_command(self, kind: str, command: str) -> str:
        """The shell line of a bash app that runs ``command`` on the ranks of this kind of task."""
        task: MPITaskSpec = getattr(self.spec.tasks, kind)
        return f"export OMP_NUM_THREADS={task.threads}; {task.launcher} {command}"


def load_site(source: str | Path | dict | None, run_dir: str | Path, cpu_count: int | None = None) -> Site:
    """Read and check a site (a YAML path, a name in ``sites/``, or a dict) and build its Config.

    ``run_dir`` is the campaign's run directory; Parsl's run_dir is ``<run_dir>/parsl``.
    ``cpu_count`` (default ``os.cpu_count()``) resolves ``auto`` sizes.
    """
    spec = check_site(source, cpu_count)
    run_dir = Path(run_dir).resolve()
    return Site(spec.name or "custom", spec, build_config(spec, run_dir / "parsl"), run_dir)


def check_site(source: str | Path | dict | None, cpu_count: int | None = None,
               cp2k_walltime: float | None = None) -> SiteSpec:
    """The site's resolved spec, checked; raise SiteError naming the field. Writes nothing and
    starts nothing, so a campaign can call it before its first file. ``cp2k_walltime``: seconds
    of one CP2K call (the campaign's reference.walltime), checked against the blocks' walltime."""
    data, name = _read(DEFAULT_SITE if source is None else source)
    try:
        spec = SiteSpec.model_validate(data)
    except ValidationError as err:
        raise SiteError(validation_message(err, name, data)) from None
    spec = resolve_auto(spec, cpu_count or os.cpu_count() or 1)
    problems = site_problems(spec, cp2k_walltime)
    if problems:
        raise SiteError("\n".join([f"the site in {name} cannot work:"] + [f"  {p}" for p in problems]))
    return spec


def _read(source: str | Path | dict) -> tuple[dict, str]:
    """The site's keys and where they came from: a dict, a YAML path, or a name in ``SITES_DIR``."""
    if isinstance(source, dict):
        return source, "the given dict"
    path = Path(source)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        path = SITES_DIR / f"{source}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SITES_DIR.glob("*.yaml")))
        raise SiteError(f"site file not found: {source} (sites shipped with alcgap: {known})")
    data = read_yaml(path, SiteError) or {}
    if not isinstance(data, dict):
        raise SiteError(f"{path}: the top level must be a mapping of keys")
    data.setdefault("name", path.stem)
    return data, str(path)
