"""Experiments built on the training entry points: ablation, gradient-variance diagnosis, the demo, statistics."""
