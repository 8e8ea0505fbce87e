"""Releasegate's domain core: selectors, targets, rules, decisions and the reconcile loop.

This package must not import FastAPI. The pure parts (``cel``, ``targets``, ``rules``) also
never read a clock: callers pass ``now``.
"""
