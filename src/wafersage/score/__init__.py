"""Answer scoring: the rule score (reward), its config, judges, the calibration set and alignment."""
