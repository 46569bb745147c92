"""Noise-regime experiments: where along the schedule memorisation is set, and interventions."""
