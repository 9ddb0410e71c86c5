"""The apps of a run, bound to where they execute.

Each app is a plain function of a stage module that takes typed settings (the sub-model of the
config it depends on, validated once at load), paths and Atoms, writes into the folder it is
given and returns small picklable things. :class:`CampaignApps` binds them to a site's Parsl
executors and resources; :class:`InlineApps` calls them here (``alcgap fit``, tests), returning
finished futures, so that a stage runs the same either way.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

from ase import Atoms

from alcgap.reference.base import Reference
from alcgap.workflow.futures import Throttle
from alcgap.workflow.stages import bootstrap, explore, fit, judge, label


def _explore_command(command: str, stdout=None, stderr=None, parsl_resource_specification=None) -> str:
    return command


class CampaignApps:
    """The apps bound to a site's executors and resources."""

    def __init__(self, site, reference: Reference):
        from parsl import bash_app, python_app  # Parsl only where a campaign runs on a site

        self.site = site
        self.throttles = {kind: Throttle(getattr(site.tasks, kind).max_concurrent) for kind in ("md", "cp2k")}
        serial = [site.executor("fit")]
        mpi = [site.executor("md")]
        self.fit_aux = python_app(bootstrap.fit_aux, executors=serial)
        self.fit_main = python_app(fit.fit_models, executors=serial)
        self.bootstrap_md = python_app(bootstrap.bootstrap_md, executors=serial)
        # the judge's survival test: serial MD in the worker, like the bootstrap's (one run per app)
        self.survival_md = python_app(judge.survival_md, executors=serial)
        self.judge_errors = python_app(judge.judge_errors, executors=serial)
        self.select = python_app(explore.pick, executors=serial)
        self.draw_tests = python_app(explore.draw_tests, executors=serial)
        # a DFT code runs on the MPI executor with its ranks; a classical stand-in is a serial call
        self._dft = hasattr(getattr(reference, "config", None), "launch_prefix")
        self._label = python_app(label.label_structure, executors=mpi if self._dft else serial)
        self._check_reference = python_app(label.check_reference, executors=mpi)
        self._explore = bash_app(_explore_command, executors=mpi)

    def check_reference(self, reference: Reference) -> Future:
        """The reference's machine checks on the MPI executor, where CP2K runs (check_on: compute)."""
        return self._check_reference(reference, parsl_resource_specification=self.site.resource_specification("cp2k", 1))

    def label(self, reference: Reference, atoms: Atoms, workdir: str) -> Future:
        if not self._dft:
            return self._label(reference, atoms, workdir)
        # the site's ranks for this structure's size (a dimer, a carved cell, a whole frame)
        task, n_atoms = self.site.tasks.cp2k, len(atoms)
        return self.throttles["cp2k"].submit(lambda: self._label(
            reference, atoms, workdir, launcher=task.launcher if task.ranks_for(n_atoms) > 1 else "", threads=task.threads,
            parsl_resource_specification=self.site.resource_specification("cp2k", n_atoms)))

    def explore(self, task_file: str) -> Future:
        task = self.site.tasks.md
        folder = Path(task_file).parent
        return self.throttles["md"].submit(lambda: self._explore(
            explore.md_command(task_file, task.launcher, task.threads), stdout=str(folder / "md.out"),
            stderr=str(folder / "md.err"),
            parsl_resource_specification=self.site.resource_specification("md", explore.md_task_atoms(task_file))))


def _inline(function: Callable) -> Callable[..., Future]:
    def call(*args, **kwargs) -> Future:
        done: Future = Future()
        try:
            done.set_result(function(*args, **kwargs))
        except Exception as err:  # noqa: BLE001  (handed to whoever waits on the future, as Parsl does)
            done.set_exception(err)
        return done

    return call


class InlineApps:
    """The same apps called in this process (``alcgap fit``): each returns a finished future."""

    def __init__(self) -> None:
        self.fit_aux = _inline(bootstrap.fit_aux)
        self.fit_main = _inline(fit.fit_models)
        self.bootstrap_md = _inline(bootstrap.bootstrap_md)
        self.label = _inline(label.label_structure)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{name}: not an app of a single fit (exploration and judging run in a campaign)")
