"""A sharded key-value service in the shape of Derecho's classic example, as replicated classes.

Four replicated types, laid out by :data:`layout` over the group's members in rank order:

- :class:`Routing`: the routing table (how many cache shards there are), on every member.
- :class:`LoadBalancer`: the front. Its query methods hash a key to a :class:`Cache` shard and
  forward the call there. It holds no state, so any member of it can serve.
- :class:`Cache`: the keys, split into :data:`CACHE_SHARDS` shards of (up to) two members.
  ``put`` and ``delete`` are ordered: every replica of the shard applies them in one order.
  ``get`` is a query served by one replica.
- :class:`Backend`: the store of record, a ``Paxos`` shard: every update the cache accepted
  (write-through), as the value of each key and an append-only ledger. An update is delivered
  only once every replica logged it with fdatasync, so the Backend survives the loss of every
  member at once: started again on the same data directories, the group restarts from the
  logs. The cache is a cache: after such a restart its shards start empty.

Only a shard's members make ordered calls, so an update from the front travels as queries to a
member that orders it for the caller: front -> ``Cache.submit_put`` on a member of the key's
shard -> ``Backend.submit`` on a back-end member, which orders ``Backend.record`` -> then
``Cache.put`` ordered in the shard. :meth:`LoadBalancer.get_stored` reads a key from the store
of record instead of the cache. Each class's annotated attributes are its state: that is
what a member new to a shard receives (state transfer) and what the demo digests.

The layout is named in the group's settings as ``kv_app:layout`` (this directory on the path).
"""

from __future__ import annotations

import hashlib

from pyderecho import (
    Mode,
    context,
    every_member,
    layout_of,
    one_subgroup,
    ordered,
    query,
    sharded,
)
from pyderecho.core.layout import PolicyLayout

CACHE_SHARDS = 2
"""How many shards the cache has; the front routes with the same number."""


def _layout(backend: Mode) -> PolicyLayout:
    return layout_of(
        {
            # Every member holds it, and it is a Paxos shard so that every member keeps a log:
            # a member takes part in a restart of the whole group only if it logged a view,
            # which a member does once it holds a Paxos shard (pyderecho.runtime.persistence).
            "Routing": every_member(Mode.PAXOS),
            "LoadBalancer": one_subgroup(1),
            # The store of record: logged to disk at every replica before it is delivered.
            "Backend": one_subgroup(2, mode=backend),
            # Shards of two; a shard runs on one member while the group is short of members,
            # and the group takes new members in up to 2 x CACHE_SHARDS.
            "Cache": sharded(CACHE_SHARDS, min_size=1, max_size=2),
        }
    )


layout = _layout(Mode.PAXOS)
"""Routing on every member; LoadBalancer 1, Backend 2 (Paxos), Cache 2 shards of 1-2: 5 to 7
members (more are spares)."""

volatile_backend_layout = _layout(Mode.ORDERED)
"""A planted bug, for the demo's test: the same service with a Backend that is ordered but not
logged, so a restart of every member brings it back empty."""


def shard_of(key: str, shards: int = CACHE_SHARDS) -> int:
    """The cache shard that holds ``key``: a hash every process computes alike (Python's
    ``hash`` of a str differs between processes)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % shards


class WrongShardError(Exception):
    """An update reached another shard than the key's. The core abandons a cut update rather
    than re-send it in another shard, and a query runs only on a member holding the shard it
    names, so this is a last line of defence: every replica refuses alike."""


class Routing:
    """The routing table every member holds: how many shards the cache has. The front reads
    its own replica, so a front that joins routes as the others do."""

    shards: int

    def __init__(self) -> None:
        self.shards = CACHE_SHARDS


def _shards() -> int:
    routing: Routing | None = context().group.replica(Routing)
    return CACHE_SHARDS if routing is None else routing.shards


class LoadBalancer:
    """The front: routes each key to its cache shard (by :class:`Routing`)."""

    @query
    async def put(self, key: str, value: bytes) -> int:
        """Store ``value``; returns the shard's update count once every replica applied it."""
        shard = shard_of(key, _shards())
        version: int = await context().group.shard(Cache, shard).submit_put(shard, key, value)
        return version

    @query
    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it was there."""
        shard = shard_of(key, _shards())
        found: bool = await context().group.shard(Cache, shard).submit_delete(shard, key)
        return found

    @query
    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await context().group.shard(Cache, shard_of(key, _shards())).get(key)
        return value

    @query
    async def get_stored(self, key: str) -> bytes | None:
        """``key`` as the store of record (the Backend) holds it, bypassing the cache."""
        value: bytes | None = await context().group.shard(Backend, 0).get(key)
        return value


class Cache:
    """One shard of the cache. ``shard`` is which one (-1 until its first update), so that an
    update meant for another shard is refused alike at every replica."""

    items: dict[str, bytes]
    version: int
    shard: int

    def __init__(self) -> None:
        self.items = {}
        self.version = 0
        self.shard = -1

    def _check(self, shard: int) -> None:
        if self.shard == -1:
            self.shard = shard
        elif shard != self.shard:
            raise WrongShardError(f"an update for shard {shard} reached shard {self.shard}")

    @ordered
    def put(self, shard: int, key: str, value: bytes) -> int:
        self._check(shard)
        self.items[key] = value
        self.version += 1
        return self.version

    @ordered
    def delete(self, shard: int, key: str) -> bool:
        self._check(shard)
        self.version += 1
        return self.items.pop(key, None) is not None

    @query
    def get(self, key: str) -> bytes | None:
        return self.items.get(key)

    @query
    async def submit_put(self, shard: int, key: str, value: bytes) -> int:
        """Order a put in this member's shard for a caller outside it; the back end records
        it first (write-through)."""
        group = context().group
        await group.shard(Backend, 0).submit("put", key, value)
        version: int = (await group.subgroup(Cache).put(shard, key, value)).value()
        return version

    @query
    async def submit_delete(self, shard: int, key: str) -> bool:
        group = context().group
        await group.shard(Backend, 0).submit("delete", key, None)
        found: bool = (await group.subgroup(Cache).delete(shard, key)).value()
        return found


class Backend:
    """The back end, the store of record: the value of every key, and an append-only ledger
    of every update, with totals.

    A ``Paxos`` shard (see :data:`layout`): its updates are on every replica's disk before
    they are delivered, so it comes back whole after every member was killed.
    """

    items: dict[str, bytes]
    ledger: list[tuple[str, str, int, str, float]]
    """(operation, key, value size, value digest, caller's timestamp) per update."""
    puts: int
    deletes: int
    bytes_written: int

    def __init__(self) -> None:
        self.items = {}
        self.ledger = []
        self.puts = 0
        self.deletes = 0
        self.bytes_written = 0

    @ordered
    def record(self, op: str, key: str, value: bytes | None) -> int:
        """Apply a put (``value``) or a delete (None) and log it in the ledger."""
        size = 0 if value is None else len(value)
        digest = "" if value is None else hashlib.blake2b(value, digest_size=8).hexdigest()
        self.ledger.append((op, key, size, digest, context().timestamp))
        if value is not None:
            self.items[key] = value
            self.puts += 1
            self.bytes_written += size
        else:
            self.items.pop(key, None)
            self.deletes += 1
        return len(self.ledger)

    @query
    def count(self) -> int:
        return len(self.ledger)

    @query
    def get(self, key: str) -> bytes | None:
        return self.items.get(key)

    @query
    async def submit(self, op: str, key: str, value: bytes | None) -> int:
        """Order ``record`` for a caller outside the back end."""
        entries: int = (await context().group.subgroup(Backend).record(op, key, value)).value()
        return entries


TYPES: dict[str, type] = {
    "Routing": Routing,
    "LoadBalancer": LoadBalancer,
    "Cache": Cache,
    "Backend": Backend,
}
"""The classes by the type names of :data:`layout`."""


def describe(replica: object) -> str:
    """A few words about a replica's contents, for the demo's table."""
    if isinstance(replica, Cache):
        return f"{len(replica.items)} keys, {replica.version} updates"
    if isinstance(replica, Backend):
        return f"{len(replica.items)} keys, {len(replica.ledger)} ledger entries"
    if isinstance(replica, Routing):
        return f"routes over {replica.shards} shards"
    if isinstance(replica, LoadBalancer):
        return "no state"
    return ""
