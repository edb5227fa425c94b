"""The ``pyderecho`` command (:mod:`~pyderecho.cli.main`), one module per subcommand.

The library never imports this package.
"""
