"""Meta-training: truncated unrolls, estimators, task normalisation, the trainer."""
