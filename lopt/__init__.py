"""lopt: learned optimizers in JAX."""
