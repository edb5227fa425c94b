"""Naming a layout from a command line or config file: a built-in name or ``module:function``.

This lives outside :mod:`pyderecho.core` because importing the user's module reads files and runs
their code, which the protocol core never does.
"""

from __future__ import annotations

import importlib
import inspect

from pyderecho.core.layout import LayoutFunction, builtin_layouts
from pyderecho.core.view import View


def resolve_layout(spec: str) -> LayoutFunction:
    """The layout ``spec`` names: a key of :data:`builtin_layouts`, or ``module:function``.

    The function is called with each view, so it is checked now for taking one argument: a
    mistake should stop the member at startup, not at its first view change.
    """
    if ":" not in spec:
        factory = builtin_layouts.get(spec)
        if factory is None:
            known = ", ".join(sorted(builtin_layouts))
            raise ValueError(f"unknown layout {spec!r}: give one of {known}, or module:function")
        return factory()
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"layout {spec!r} is not of the form module:function")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ValueError(f"layout {spec!r}: no module named {exc.name!r}") from exc
        raise ValueError(f"layout {spec!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"layout {spec!r}: importing {module_name!r} failed: {exc!r}") from exc
    try:
        function = getattr(module, attribute)
    except AttributeError:
        raise ValueError(
            f"layout {spec!r}: module {module_name!r} has no attribute {attribute!r}"
        ) from None
    if not callable(function):
        raise ValueError(
            f"layout {spec!r} names a {type(function).__name__}, not a function of the view"
        )
    try:
        inspect.signature(function).bind(View(epoch=0, members=()))
    except TypeError as exc:
        raise ValueError(
            f"layout {spec!r} cannot be called with a view ({exc}): name the layout function "
            f"itself, not a factory of one"
        ) from exc
    except ValueError:
        pass  # no signature to inspect (some builtins): the first view change will tell
    layout: LayoutFunction = function
    return layout
