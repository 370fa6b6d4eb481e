"""Benchmarks for training-advisor on real learning curves (``/work/shared/curves``).

``_curves`` loads the curves into per-run arrays, ``_rules`` holds the anchor stopping rules and
hindsight oracles, and ``stopping`` replays every run through every rule and writes the report.
Run ``python -m benchmarks.stopping --help`` from the repository root.
"""
