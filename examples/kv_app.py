"""A sharded key-value service in the shape of Derecho's classic example, as replicated classes.

Three replicated types, laid out by :data:`layout` over the group's members in rank order:

- :class:`LoadBalancer`: the front. Its query methods hash a key to a :class:`Cache` shard and
  forward the call there. It holds (almost) no state, so any member of it can serve.
- :class:`Cache`: the keys, split into :data:`CACHE_SHARDS` shards of (up to) two members.
  ``put`` and ``delete`` are ordered: every replica of the shard applies them in one order.
  ``get`` is a query served by one replica.
- :class:`Backend`: an append-only ledger of every update the cache accepted (write-through).

Only a shard's members make ordered calls, so an update from the front travels as queries to a
member that orders it for the caller: front -> ``Cache.submit_put`` on a member of the key's
shard -> ``Backend.submit`` on a back-end member, which orders ``Backend.record`` -> then
``Cache.put`` ordered in the shard. Each class's annotated attributes are its state: that is
what a member new to a shard receives (state transfer) and what the demo digests.

The layout is named in the group's settings as ``kv_app:layout`` (this directory on the path).
"""

from __future__ import annotations

import hashlib

from pyderecho import context, layout_of, one_subgroup, ordered, query, sharded

CACHE_SHARDS = 2
"""How many shards the cache has; the front routes with the same number."""

layout = layout_of(
    {
        "LoadBalancer": one_subgroup(1),
        "Backend": one_subgroup(2),
        # Shards of two; a shard runs on one member while the group is short of members, and
        # the group takes new members in up to 2 x CACHE_SHARDS.
        "Cache": sharded(CACHE_SHARDS, min_size=1, max_size=2),
    }
)
"""LoadBalancer 1, Backend 2, Cache 2 shards of 1-2: 5 to 7 members (more are spares)."""


def shard_of(key: str, shards: int = CACHE_SHARDS) -> int:
    """The cache shard that holds ``key``: a hash every process computes alike (Python's
    ``hash`` of a str differs between processes)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % shards


class WrongShardError(Exception):
    """An update reached another shard than the key's. The core abandons a cut update rather
    than re-send it in another shard, and a query runs only on a member holding the shard it
    names, so this is a last line of defence: every replica refuses alike."""


class LoadBalancer:
    """The front: routes each key to its cache shard. Its state is the number of shards it
    routes over, so that a front that joins routes as the others do."""

    shards: int

    def __init__(self) -> None:
        self.shards = CACHE_SHARDS

    @query
    async def put(self, key: str, value: bytes) -> int:
        """Store ``value``; returns the shard's update count once every replica applied it."""
        shard = shard_of(key, self.shards)
        version: int = await context().group.shard(Cache, shard).submit_put(shard, key, value)
        return version

    @query
    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it was there."""
        shard = shard_of(key, self.shards)
        found: bool = await context().group.shard(Cache, shard).submit_delete(shard, key)
        return found

    @query
    async def get(self, key: str) -> bytes | None:
        value: bytes | None = (
            await context().group.shard(Cache, shard_of(key, self.shards)).get(key)
        )
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
        digest = hashlib.blake2b(value, digest_size=8).hexdigest()
        await group.shard(Backend, 0).submit("put", key, len(value), digest)
        version: int = (await group.subgroup(Cache).put(shard, key, value)).value()
        return version

    @query
    async def submit_delete(self, shard: int, key: str) -> bool:
        group = context().group
        await group.shard(Backend, 0).submit("delete", key, 0, "")
        found: bool = (await group.subgroup(Cache).delete(shard, key)).value()
        return found


class Backend:
    """The back end: an append-only ledger of every update, with totals.

    Ordered (AtomicMulticast) for now: when the persistent mode lands, its layout entry becomes
    ``one_subgroup(2, mode=Mode.PAXOS)`` and the ledger survives a restart of every member.
    """

    ledger: list[tuple[str, str, int, str, float]]
    """(operation, key, value size, value digest, caller's timestamp) per update."""
    puts: int
    deletes: int
    bytes_written: int

    def __init__(self) -> None:
        self.ledger = []
        self.puts = 0
        self.deletes = 0
        self.bytes_written = 0

    @ordered
    def record(self, op: str, key: str, size: int, digest: str) -> int:
        self.ledger.append((op, key, size, digest, context().timestamp))
        if op == "put":
            self.puts += 1
            self.bytes_written += size
        else:
            self.deletes += 1
        return len(self.ledger)

    @query
    def count(self) -> int:
        return len(self.ledger)

    @query
    async def submit(self, op: str, key: str, size: int, digest: str) -> int:
        """Order ``record`` for a caller outside the back end."""
        entries: int = (
            await context().group.subgroup(Backend).record(op, key, size, digest)
        ).value()
        return entries


TYPES: dict[str, type] = {"LoadBalancer": LoadBalancer, "Cache": Cache, "Backend": Backend}
"""The classes by the type names of :data:`layout`."""


def describe(replica: object) -> str:
    """A few words about a replica's contents, for the demo's table."""
    if isinstance(replica, Cache):
        return f"{len(replica.items)} keys, {replica.version} updates"
    if isinstance(replica, Backend):
        return f"{len(replica.ledger)} ledger entries"
    if isinstance(replica, LoadBalancer):
        return f"routes over {replica.shards} shards"
    return ""
