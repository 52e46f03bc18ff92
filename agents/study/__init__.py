"""The analysis of many runs: experiment grids run by a backend (``experiments``), their numbers (``results``,
without matplotlib) and figures (``plots``).

Nothing is imported here, so reading results does not load the plotting or process-pool code."""
