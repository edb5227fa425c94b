"""Who is at fault: the caller (local) or a peer (remote).

The split follows h11: a :class:`LocalProtocolError` means the application misused the API and
should fix its call; a :class:`RemoteProtocolError` means a peer sent something the protocol does
not allow. A remote error is counted and the offending input dropped; it never takes a member
down.
"""


class ProtocolError(Exception):
    """Base of the errors the protocol core raises."""


class LocalProtocolError(ProtocolError):
    """The application asked for something the protocol does not allow right now."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something malformed or out of place."""
