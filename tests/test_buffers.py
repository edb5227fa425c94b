"""The reassembly buffer pool: reuse only what nothing else holds, give back what sits idle."""

from __future__ import annotations

from pyderecho.core.buffers import IDLE_S, BufferPool


def test_a_buffer_is_reused_only_once_every_view_of_it_is_gone() -> None:
    pool = BufferPool()
    first = pool.take(100)
    first_id, view = id(first), memoryview(first)[10:20].toreadonly()
    del first
    second = pool.take(100)
    assert id(second) != first_id, "handed out while a view of it lived"
    del view
    assert id(pool.take(100)) == first_id
    assert pool.reused == 1
    assert len(second) == 100


def test_sizes_must_match_and_the_bound_holds() -> None:
    pool = BufferPool(max_bytes=250)
    kept = [pool.take(100), pool.take(100), pool.take(100)]  # the third is not pooled
    assert pool.pooled_bytes == 200
    del kept
    assert len(pool.take(50)) == 50 and pool.reused == 0
    pool.take(100)
    assert pool.reused == 1


def test_idle_buffers_are_given_back_and_busy_ones_kept() -> None:
    pool = BufferPool()
    busy = pool.take(100)
    pool.take(200)  # dropped at once by the caller: free
    pool.trim(0.0)
    assert pool.pooled_bytes == 300
    pool.trim(IDLE_S / 2)
    assert pool.pooled_bytes == 300, "given back before it was idle for long"
    pool.trim(IDLE_S * 2)
    assert pool.pooled_bytes == 100, "the free, idle buffer stays pooled"
    assert len(busy) == 100
    del busy
    pool.trim(IDLE_S * 4)
    assert pool.pooled_bytes == 0
