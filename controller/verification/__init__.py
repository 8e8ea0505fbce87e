"""Verification after a deploy (SPEC §7): templates, providers that take measurements, and the pure
analysis that turns measurements into a metric's and a run's outcome.

Layers: ``templates`` (pure) and ``analysis`` (pure) know nothing of I/O; ``providers`` is the only
module here that talks to the network. Scheduling and persistence live in ``controller.store``.
"""
