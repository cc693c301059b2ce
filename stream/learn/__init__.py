"""The learning path: the incremental trainer, its graph mirror, policies and checkpoints."""
