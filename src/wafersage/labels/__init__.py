"""Label quality: cleaning scores and verdicts, and an engineer's corrections."""
