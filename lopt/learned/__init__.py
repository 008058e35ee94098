"""lopt.learned."""
