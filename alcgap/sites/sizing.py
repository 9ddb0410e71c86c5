"""Sizing a site: every 'auto' made a number, then does each task fit the blocks it runs in?

:func:`resolve_auto` fills cores from the machine, ranks from a whole node and tasks at once
from the blocks; :func:`site_problems` checks what no single field can: blocks, heartbeats, the
MPI launcher, ranks x threads against nodes and cores, a CP2K call against a block's walltime,
and fit threads against the serial executor's cores. Each problem names the field and the fix.
"""

from __future__ import annotations

from alcgap.sites.spec import MPI, SERIAL, MPITaskSpec, SiteSpec, walltime_seconds


def resolve_auto(spec: SiteSpec, cpu_count: int) -> SiteSpec:
    """Replace every 'auto' with a number (cores from ``cpu_count``) and fill nodes per task."""
    spec = spec.model_copy(deep=True)
    providers = (spec.executors.serial.provider, spec.executors.mpi.provider)
    for provider in providers:
        key = "cpus_per_node" if provider.type == "pbspro" else "cores_per_node"
        if getattr(provider, key) == "auto":
            setattr(provider, key, cpu_count)
    mpi = spec.executors.mpi
    cores = mpi.provider.cores()
    for task in (spec.tasks.md, spec.tasks.cp2k):
        full_node = max(1, cores // task.threads)
        if isinstance(task.ranks, dict):
            task.ranks = {atoms: full_node if ranks == "auto" else ranks for atoms, ranks in task.ranks.items()}
        elif task.ranks == "auto":
            task.ranks = full_node
    if spec.tasks.fit.threads == "auto":
        spec.tasks.fit.threads = spec.executors.serial.provider.cores()
    _resolve_tasks_at_once(spec)
    return spec


def _resolve_tasks_at_once(spec: SiteSpec) -> None:
    """'auto' ``max_concurrent`` of the MPI tasks and ``max_workers_per_block`` of the MPI executor."""
    mpi = spec.executors.mpi
    cores = mpi.provider.cores()
    local = mpi.provider.type == "local"
    for task in (spec.tasks.md, spec.tasks.cp2k):
        if task.max_concurrent == "auto":
            # sized for the largest tasks: a local slot does not know how many ranks its task has,
            # so smaller tasks at once than the cores allow, never more ranks than cores
            largest = max(task.ranks_by_atoms().values())
            if local:  # each task takes one 'localhost' slot and ranks x threads cores
                task.max_concurrent = max(1, cores // (largest * task.threads))
            else:  # the MPI executor hands out whole nodes
                per_block = max(1, mpi.provider.nodes_per_block // task.nodes_for(largest, cores))
                task.max_concurrent = per_block * mpi.provider.max_blocks
    if mpi.max_workers_per_block == "auto":
        if local:
            mpi.max_workers_per_block = max(spec.tasks.md.max_concurrent, spec.tasks.cp2k.max_concurrent)
        else:
            mpi.max_workers_per_block = mpi.provider.nodes_per_block


def site_problems(spec: SiteSpec, cp2k_walltime: float | None = None) -> list[str]:
    """Cross-field checks: does each task fit the blocks it will run in (a CP2K call of
    ``cp2k_walltime`` seconds, the campaign's reference.walltime, included)?"""
    return (_block_problems(spec) + _heartbeat_problems(spec) + _mpi_launcher_problems(spec)
            + _rank_problems(spec) + _walltime_problems(spec, cp2k_walltime) + _fit_thread_problems(spec))


def _block_problems(spec: SiteSpec) -> list[str]:
    problems = []
    for label in (SERIAL, MPI):
        provider = getattr(spec.executors, label).provider
        where = f"executors.{label}.provider"
        if provider.min_blocks > provider.max_blocks:
            problems.append(f"{where}.min_blocks: {provider.min_blocks} > max_blocks {provider.max_blocks}")
        if provider.init_blocks > provider.max_blocks:
            problems.append(f"{where}.init_blocks: {provider.init_blocks} > max_blocks {provider.max_blocks}")
    return problems


def _heartbeat_problems(spec: SiteSpec) -> list[str]:
    problems = []
    for label in (SERIAL, MPI):
        executor = getattr(spec.executors, label)
        if executor.heartbeat_threshold <= executor.heartbeat_period:
            problems.append(
                f"executors.{label}.heartbeat_threshold: {executor.heartbeat_threshold} s is not longer than "
                f"heartbeat_period {executor.heartbeat_period} s; healthy blocks would count as lost: "
                f"make it a few periods, e.g. {4 * executor.heartbeat_period}"
            )
    return problems


def _mpi_launcher_problems(spec: SiteSpec) -> list[str]:
    problems = []
    mpi = spec.executors.mpi
    if mpi.provider.launcher not in (None, "simple"):
        problems.append(
            f"executors.mpi.provider.launcher: '{mpi.provider.launcher}' cannot work; "
            "Parsl's MPIExecutor needs 'simple' (one worker pool on the first node of a block; the ranks start per task with mpi_launcher)"
        )
    if mpi.provider.type == "local" and mpi.mpi_launcher != "mpiexec":
        problems.append(
            f"executors.mpi.mpi_launcher: '{mpi.mpi_launcher}' needs a batch job; a local provider uses 'mpiexec'"
        )
    return problems


def _rank_problems(spec: SiteSpec) -> list[str]:
    """Ranks x threads of every MPI task size against the nodes of a block and their cores."""
    problems = []
    for kind in ("md", "cp2k"):
        task: MPITaskSpec = getattr(spec.tasks, kind)
        for atoms, ranks in task.ranks_by_atoms().items():
            field = f"tasks.{kind}.ranks" + (f".{atoms}" if isinstance(task.ranks, dict) else "")
            problem = _ranks_problem(spec, kind, task, field, ranks)
            if problem:
                problems.append(problem)
    return problems


def _ranks_problem(spec: SiteSpec, kind: str, task: MPITaskSpec, field: str, ranks: int) -> str | None:
    """Why ``ranks`` ranks of this task cannot run in a block of the MPI executor, or None."""
    mpi = spec.executors.mpi
    where = "executors.mpi.provider"
    cores_key = "cpus_per_node" if mpi.provider.type == "pbspro" else "cores_per_node"
    cores, nodes_per_block = mpi.provider.cores(), mpi.provider.nodes_per_block
    nodes = task.nodes_for(ranks, cores)
    if nodes > nodes_per_block:
        most = cores * nodes_per_block // task.threads
        return (f"{field}: {ranks} ranks x {task.threads} thread(s) need {nodes} nodes "
                f"of {cores} cores ({where}.{cores_key}) but a block has {where}.nodes_per_block = "
                f"{nodes_per_block}: raise nodes_per_block to {nodes} or lower ranks to at most {most}")
    if ranks % nodes:
        return (f"{field}: {ranks} ranks do not split evenly over {nodes} nodes (tasks.{kind}.nodes); "
                f"use a multiple of {nodes}")
    if ranks // nodes * task.threads > cores:
        return (f"{field}: {ranks // nodes} ranks x {task.threads} threads per node exceed "
                f"{cores} cores ({where}.{cores_key}); raise tasks.{kind}.nodes or lower ranks")
    return None


def _walltime_problems(spec: SiteSpec, cp2k_walltime: float | None) -> list[str]:
    walltime = getattr(spec.executors.mpi.provider, "walltime", None)
    if walltime and cp2k_walltime and cp2k_walltime > walltime_seconds(walltime):
        return [
            f"reference.walltime: {cp2k_walltime:g} s for one CP2K call is longer than a block "
            f"(executors.mpi.provider.walltime {walltime}); no CP2K call could finish: shorten it or raise the block's walltime"
        ]
    return []


def _fit_thread_problems(spec: SiteSpec) -> list[str]:
    serial = spec.executors.serial.provider
    if spec.tasks.fit.threads > serial.cores():
        return [f"tasks.fit.threads: {spec.tasks.fit.threads} > {serial.cores()} cores of executors.serial.provider"]
    return []
