"""The per-worker training loop and its pieces (schedule, divergence, sharpness, checkpoints)."""
