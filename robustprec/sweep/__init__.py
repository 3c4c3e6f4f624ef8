"""Sweep planning and execution on Ray Tune."""
