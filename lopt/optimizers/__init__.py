"""lopt.optimizers."""
