"""Reports of a run directory: an interface (it reads run state), not an analysis kernel.

- :mod:`~alcgap.report.write`: ``write_report`` and ``alcgap report RUN_DIR`` (``main_report``);
- :mod:`~alcgap.report.records`: each ``iter-NNN``'s metrics.json read as an ``IterationRecord``;
- :mod:`~alcgap.report.rdfs`, :mod:`~alcgap.report.learning_curve`: the RDF, VDOS and learning-curve figures;
- :mod:`~alcgap.report.campaign`, :mod:`~alcgap.report.runs`, :mod:`~alcgap.report.checks`: what only a
  campaign has (status, aux, labels; exploration runs and clusters; held-out parity and calibration);
- :mod:`~alcgap.report.page`: the HTML page; :mod:`~alcgap.report.status`: ``alcgap status`` in 80 columns.

What the report reads (every piece optional; an iteration without MD yet still gets its row):

- ``<run>/iter-NNN/metrics.json``, one object per iteration::

    {
      "iteration": 3,                      # int; default: NNN of the directory name
      "labels": 420,                       # labelled structures used for this iteration's fit
      "new_labels": 60,                    # labels this iteration added
      "errors": {                          # held-out errors: flat for one model, or per model
        "energy_mae_meV_atom": 4.7, "energy_rmse_meV_atom": 6.1,
        "force_rmse_eV_A": 0.31, "force_mae_eV_A": 0.22
      },                                   # ErrorMetrics.as_dict() keys are accepted as well
      "clustering": {"seed-1x": "clean", "seed-10x": "clustered"},
                                           # per exploration run: a verdict string, or an
                                           # as_dict() of a ClusteringVerdict/TrajectoryAnalysis
      "rdf_distance": {"seed-10x": 0.21},  # per run (or one float) against the reference RDF
      "vdos": {"modes_meV": {"composite": [...], "reference": [...]}, "sigma_meV": 2.0}
    }
- ``<run>/iter-NNN/md/*.xyz`` (or ``.extxyz``), or a campaign's ``md/<run>/trajectory.xyz``:
  exploration trajectories, one per run. Their final frames (of the last ``rdf_frames``, those
  of the last protocol segment where the frames carry ``md_segment``: the quench) give the
  iteration's RDF figure, a row per run against the reference, and a clustering verdict and RDF
  distance for any run metrics.json does not judge.
- the reference structures for RDFs: ``<run>/reference.xyz``, else ``<run>/train.xyz``, else
  ``<run>/iter-000/*.xyz``.
- ``<run>/iter-NNN/plots/parity.png`` and ``plots/variance_vs_error.png`` (a campaign's held-out
  parity and variance calibration), shown under their iteration with the numbers behind them
  (:func:`alcgap.report.checks.iteration_checks`).
- ``<run>/summary.json`` (folded away at the end of the page) and every other ``*.png`` below
  the run directory ("plots of the run").

It writes ``<run>/report/``: ``index.html`` (images inlined as base64 data URIs, so the page
travels alone), ``report.json`` (the figures the page shows; a campaign's per-iteration numbers
under ``campaign.iterations``: ``parity``, ``calibration``, ``rdf``) and its own PNGs. A part
that fails is an entry in ``problems``, never a missing page.
"""


def __getattr__(name):
    # imported on first use: the page's modules load matplotlib and the aux fit (seconds), which
    # `alcgap status` (alcgap.report.status) does without
    if name in ("write_report", "main_report"):
        from alcgap.report import write  # matplotlib and the aux: loaded when a report is written

        return getattr(write, name)
    raise AttributeError(f"module 'alcgap.report' has no attribute {name!r}")


__all__ = ["main_report", "write_report"]
