"""One torch CPU thread per test process: the suite runs one process per core, and OpenMP
barriers across threads stall badly on a loaded machine (a 1M-parameter AdamW step went from
~10 ms to ~1.4 s with 2 threads under load)."""

try:
    import torch
except ImportError:  # the tests in this folder skip themselves
    torch = None

if torch is not None:
    torch.set_num_threads(1)
