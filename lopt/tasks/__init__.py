"""lopt.tasks."""
