"""Training: options, strategy choice, the two-phase trainer and the run directory."""
