"""The ``parsl.Config`` of a resolved, checked site: one Parsl object per model of the site file.

Parsl is imported only when a Config is built: checking a site starts nothing and stays cheap.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alcgap.sites.spec import (MPI, SERIAL, LocalProviderSpec, MPIExecutorSpec, ProviderBase, SiteSpec,
                               SlurmProviderSpec)


def build_config(spec: SiteSpec, parsl_dir: Path):
    """The ``parsl.Config`` of a resolved, checked site; Parsl's run_dir is ``parsl_dir``."""
    from parsl.config import Config  # here: Parsl is slow to import (see the module docstring)
    from parsl.executors import HighThroughputExecutor, MPIExecutor

    bin_dir = Path(sys.executable).parent
    # The interchange runs on the driver, started by name ('interchange.py'), which only an
    # activated environment has on PATH: name the driver's own.
    interchange = bin_dir / "interchange.py"
    interchange_cmd = str(interchange) if interchange.exists() else None
    serial, mpi = spec.executors.serial, spec.executors.mpi
    executors = [
        HighThroughputExecutor(
            label=SERIAL,
            provider=_provider(serial.provider, "single_node", _worker_init(spec, serial.provider)),
            max_workers_per_node=serial.max_workers_per_node,
            cores_per_worker=serial.cores_per_worker,
            mem_per_worker=serial.mem_per_worker,
            interchange_launch_cmd=[interchange_cmd] if interchange_cmd else None,
            address=serial.address,
            worker_debug=serial.worker_debug,
            heartbeat_period=serial.heartbeat_period,
            heartbeat_threshold=serial.heartbeat_threshold,
        ),
        MPIExecutor(
            label=MPI,
            provider=_provider(mpi.provider, "simple", _worker_init(spec, mpi.provider, parsl_dir, mpi)),
            mpi_launcher=mpi.mpi_launcher,
            max_workers_per_block=mpi.max_workers_per_block,
            # MPIExecutor types this as a str (HTEX: a list); a str is run as one program
            interchange_launch_cmd=interchange_cmd,
            address=mpi.address,
            worker_debug=mpi.worker_debug,
            heartbeat_period=mpi.heartbeat_period,
            heartbeat_threshold=mpi.heartbeat_threshold,
        ),
    ]
    return Config(
        executors=executors,
        run_dir=str(parsl_dir),
        retries=spec.retries,
        max_idletime=spec.max_idletime,
        strategy=None if spec.strategy == "none" else spec.strategy,
    )


def _worker_init(spec: SiteSpec, provider: ProviderBase, parsl_dir: Path | None = None,
                 mpi: MPIExecutorSpec | None = None) -> str:
    lines = [provider.worker_init.strip()] if provider.worker_init.strip() else []
    # after the site's own worker_init (module load ...), so that this environment's python,
    # process_worker_pool.py and mpiexec come first
    if spec.python_env == "driver":
        lines.append(f'export PATH="{Path(sys.executable).parent}:$PATH"')
    elif spec.python_env != "none":
        lines.append(f'export PATH="{Path(spec.python_env).expanduser()}/bin:$PATH"')
    if mpi is not None and provider.type == "local":
        # Parsl's MPI mode takes its nodes from the batch job (SLURM_NODELIST or PBS_NODEFILE);
        # with neither it stops: "mpi_mode does not support scheduler:Scheduler.Unknown".
        # A nodefile of 'localhost' lines gives it one slot per concurrent MPI task.
        parsl_dir.mkdir(parents=True, exist_ok=True)
        nodefile = parsl_dir / "mpi-nodefile"
        nodefile.write_text("localhost\n" * mpi.max_workers_per_block)
        lines += ["unset SLURM_NODELIST", f'export PBS_NODEFILE="{nodefile}"']
    return "\n".join(lines)


def _provider(provider: ProviderBase, default_launcher: str, worker_init: str):
    from parsl import launchers, providers  # here: Parsl is slow to import (see the module docstring)

    launcher = {
        "simple": launchers.SimpleLauncher, "srun": launchers.SrunLauncher,
        "mpiexec": launchers.MpiExecLauncher, "single_node": launchers.SingleNodeLauncher,
    }[provider.launcher or default_launcher]()
    common = {
        "nodes_per_block": provider.nodes_per_block, "init_blocks": provider.init_blocks,
        "min_blocks": provider.min_blocks, "max_blocks": provider.max_blocks,
        "parallelism": provider.parallelism, "worker_init": worker_init, "launcher": launcher,
    }
    if isinstance(provider, LocalProviderSpec):
        return providers.LocalProvider(**common)
    if isinstance(provider, SlurmProviderSpec):
        return providers.SlurmProvider(
            partition=provider.partition, account=provider.account, qos=provider.qos,
            constraint=provider.constraint, walltime=provider.walltime,
            cores_per_node=provider.cores_per_node, mem_per_node=provider.mem_per_node,
            exclusive=provider.exclusive, scheduler_options=provider.scheduler_options, **common,
        )
    return providers.PBSProProvider(
        queue=provider.queue, account=provider.account, walltime=provider.walltime,
        cpus_per_node=provider.cpus_per_node, select_options=provider.select_options,
        scheduler_options=provider.scheduler_options, **common,
    )
