"""The protocol core: pure state machines, no I/O, no clocks, no randomness of their own.

Drivers (the simulator, the shared-memory and TCP transports) feed events in with an explicit
``now`` and drain actions out; that is what makes every run reproducible from a seed.

The core may run compiled to C by mypyc (README, "A compiled core"): the same source, so the
same behaviour, but its classes can then not be patched at run time, which is why the tests
that plant bugs in it run on the Python source.
"""

COMPILED: bool = not __file__.endswith(".py")
"""Whether this core runs compiled (an extension module built by mypyc) or as Python source;
benchmarks report it beside their figures."""
