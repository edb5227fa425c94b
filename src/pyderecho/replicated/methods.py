"""Marking a class's methods ``@ordered`` or ``@query``, and the method table built from them.

A replicated class is any class; what makes it replicated is the group running one instance per
replica of a shard. Its marked methods are its remote interface: each gets a msgspec struct of
its parameters (from their annotations), so that arguments are checked at the call site, travel
as msgpack and are validated again on receipt, never pickled. The table is built once per class.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import msgspec

from pyderecho.core.errors import LocalProtocolError

F = TypeVar("F", bound=Callable[..., Any])

Kind = Literal["ordered", "query"]

_MARK = "__pyderecho_kind__"


def ordered(method: F) -> F:
    """Mark ``method`` to run on every replica of the shard, in the shard's total order.

    It must be synchronous and deterministic (the same state and arguments give the same result
    and the same new state everywhere): read :func:`pyderecho.context` for the version, the
    caller and the sender's timestamp instead of a clock. Its exceptions are part of the
    replicated outcome: every replica raises alike, and the caller sees each as a
    :class:`RemoteError`.
    """
    if inspect.iscoroutinefunction(method):
        raise TypeError(
            f"@ordered method {method.__qualname__} is async: ordered methods run inside the "
            "delivery order and must be synchronous"
        )
    setattr(method, _MARK, "ordered")
    return method


def query(method: F) -> F:
    """Mark ``method`` to run on one replica of the shard; it must not change the state.

    It may be ``async``, and may make ordered calls in its own shard through
    ``pyderecho.context().group``: the pattern of a front end that orders on a caller's behalf.
    """
    setattr(method, _MARK, "query")
    return method


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One marked method: how to check, encode and decode its arguments and its result."""

    name: str
    kind: Kind
    signature: inspect.Signature
    args_type: type[msgspec.Struct]
    returns: Any
    is_async: bool
    positional: bool
    """Every parameter can be passed by position: a replica calls with the argument tuple."""
    args_decoder: msgspec.msgpack.Decoder[Any]
    result_decoder: msgspec.msgpack.Decoder[Any]

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> msgspec.Struct:
        """The call's arguments as the method's argument struct; a wrong count, name or type
        raises ``TypeError`` here, at the caller, not on the replicas."""
        if self.positional and not kwargs and len(args) == len(self.signature.parameters):
            return self.args_type(*args)  # the common case, without inspect's binding
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        bound.apply_defaults()
        return self.args_type(**bound.arguments)

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """Encoded arguments, already validated against the annotations (by decoding them
        as a replica will, so that a caller learns of a mistake before the group does)."""
        encoded = _encoder.encode(self.bind(args, kwargs))
        try:
            self.args_decoder.decode(encoded)
        except msgspec.ValidationError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        return encoded


_encoder = msgspec.msgpack.Encoder()


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """A replicated class: its name in the layout, its methods, and how its state travels."""

    name: str
    cls: type[Any]
    methods: dict[str, MethodSpec]
    state_type: type[msgspec.Struct] | None
    """The struct of the annotated attributes, unless the class marshals its own state."""

    cache: ClassVar[dict[tuple[type[Any], str], TypeSpec]] = {}

    def method(self, name: str, kind: Kind | None = None) -> MethodSpec:
        """The marked method ``name``; a clear error if it is unknown or of the other kind."""
        spec = self.methods.get(name)
        if spec is None:
            marked = ", ".join(sorted(self.methods)) or "none"
            raise AttributeError(
                f"{self.cls.__qualname__} has no @ordered or @query method {name!r} "
                f"(marked: {marked})"
            )
        if kind is not None and spec.kind != kind:
            raise LocalProtocolError(f"{self.cls.__qualname__}.{name} is @{spec.kind}, not {kind}")
        return spec


def type_spec(name: str, cls: type[Any]) -> TypeSpec:
    """The table of ``cls`` under the layout's type ``name``, built once.

    Every parameter of a marked method must be annotated: the annotations are the wire
    contract, and a missing one is found here, when the group starts, not at the first call.
    """
    key = (cls, name)
    spec = TypeSpec.cache.get(key)
    if spec is None:
        methods = {
            attribute: _method_spec(cls, attribute, function)
            for attribute, function in inspect.getmembers(cls, inspect.isfunction)
            if getattr(function, _MARK, None) is not None
        }
        custom = callable(getattr(cls, "snapshot", None)) and callable(
            getattr(cls, "restore", None)
        )
        state_type = None if custom else _state_struct(cls)
        spec = TypeSpec.cache[key] = TypeSpec(name, cls, methods, state_type)
    return spec


def _method_spec(cls: type[Any], name: str, function: Callable[..., Any]) -> MethodSpec:
    hints = typing.get_type_hints(function)
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())[1:]  # without self
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{cls.__qualname__}.{name}: *args and **kwargs cannot be replicated")
        if parameter.name not in hints:
            raise TypeError(
                f"{cls.__qualname__}.{name}: parameter {parameter.name!r} needs an annotation "
                "(the annotations say how arguments travel and are checked)"
            )
        if parameter.default is parameter.empty:
            fields.append((parameter.name, hints[parameter.name]))
        else:
            fields.append((parameter.name, hints[parameter.name], parameter.default))
    args_type = msgspec.defstruct(
        f"{cls.__qualname__}.{name}.args", fields, array_like=True, forbid_unknown_fields=True
    )
    returns = hints.get("return", Any)
    if returns is type(None):
        returns = None
    return MethodSpec(
        name=name,
        kind=getattr(function, _MARK),
        signature=signature.replace(parameters=parameters),
        args_type=args_type,
        returns=returns,
        is_async=inspect.iscoroutinefunction(function),
        positional=all(p.kind is not p.KEYWORD_ONLY for p in parameters),
        args_decoder=msgspec.msgpack.Decoder(args_type),
        result_decoder=msgspec.msgpack.Decoder(Any if returns is None else returns),
    )


def _state_struct(cls: type[Any]) -> type[msgspec.Struct]:
    hints = typing.get_type_hints(cls)
    fields = [
        (attribute, hint)
        for attribute, hint in hints.items()
        if not attribute.startswith("_") and typing.get_origin(hint) is not ClassVar
    ]
    return msgspec.defstruct(f"{cls.__qualname__}.state", fields, array_like=True)
