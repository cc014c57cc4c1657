"""Training engine: loop, optimizers and schedules, checkpoints."""
