"""Predictor metrics and the trace-driven expert-cache benchmark (`specmd-eval`). Nothing imports this package."""
