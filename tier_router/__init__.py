"""The `tier-router` command line (train, score, route, evaluate, serving commands)."""

__version__ = "0.1.0"
