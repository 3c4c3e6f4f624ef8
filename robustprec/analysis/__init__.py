"""Analysis of sweep records: metrics, boundary fits, plots, reports."""
