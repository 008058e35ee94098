"""lopt.inner."""
