"""alcgap: composite Gaussian approximation potentials that stay physical.

A repulsive-only 2-body auxiliary GAP fitted to the short-range part of dimer curves, plus a
main SOAP GAP fitted on the residual (reference minus auxiliary).
"""

from alcgap.config import ConfigError, FitConfig, load_fit_config

__version__ = "0.1.0"


def run_fit(config, run_dir):
    """Run the composite fit (config: a FitConfig, a dict or a YAML path) in ``run_dir``; return the summary."""
    from alcgap.workflow.fit import run_fit as _run_fit

    if not isinstance(config, FitConfig):
        config = load_fit_config(config)
    return _run_fit(config, run_dir)


def GapCalculator(*args, **kwargs):  # noqa: N802 - the class, imported lazily (quippy is slow to import)
    from alcgap.calculator import GapCalculator as _GapCalculator

    return _GapCalculator(*args, **kwargs)


__all__ = ["ConfigError", "FitConfig", "GapCalculator", "load_fit_config", "run_fit"]
