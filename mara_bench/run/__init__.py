"""Training runs: the only code that writes a run folder. Layout and readers (:mod:`.layout`), pipeline, training
loop, checkpoints, DDP, evaluation and metrics, FLOP cost, run info and input hashes, the run lock, and sweeps."""
