"""The runtime: a protocol core node driven on asyncio over a real transport.

:mod:`~pyderecho.runtime.member` holds :class:`Member` (async), :mod:`~pyderecho.runtime.blocking`
its blocking face for callers that are not async.
"""

from pyderecho.runtime.blocking import BlockingMember
from pyderecho.runtime.member import GroupStopped, Member, deliveries

__all__ = ["BlockingMember", "GroupStopped", "Member", "deliveries"]
