"""Evaluation: the seed reports' tables (reconstruction, zero-shot, linear probe, CE recovered)
and gradient heat maps. Entry point: `clipsae eval` (evaluation/cli.py)."""
