"""The protocol core: pure state machines, no I/O, no clocks, no randomness of their own.

Drivers (the simulator, the shared-memory and TCP transports) feed events in with an explicit
``now`` and drain actions out; that is what makes every run reproducible from a seed.
"""
