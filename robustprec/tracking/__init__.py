"""Record store (Parquet curves, summaries) and the MLflow mirror."""
