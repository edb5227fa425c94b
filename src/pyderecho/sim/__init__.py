"""The deterministic simulator: many protocol core nodes in one process on a virtual clock.

:mod:`~pyderecho.sim.simulation` drives the nodes, :mod:`~pyderecho.sim.links` times their
links (the in-process memory transport uses the same model), :mod:`~pyderecho.sim.swarm` runs a
layout under a random workload and faults and checks the outcome (``pyderecho simulate``).
Nothing is imported here, so that the memory transport can use the links without loading the
simulator.
"""
