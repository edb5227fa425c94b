"""Histories of a run: what each member sent and delivered, and the checker that judges them.

Kept apart from :mod:`pyderecho.testing` so that drivers (the simulator, a member's delivery
log) can record histories without importing the test tooling that imports them.
"""
