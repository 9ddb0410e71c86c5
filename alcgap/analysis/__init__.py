"""Analysis kernels: error metrics, plots."""
