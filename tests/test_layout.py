"""Layout policies, the built-in layouts and naming a layout by string."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyderecho.core.layout import (
    Allocation,
    InadequateView,
    Mode,
    Paxos,
    Raw,
    ShardLayout,
    builtin_layouts,
    compute_layout,
    every_member,
    layout_of,
    one_subgroup,
    seed_example,
    sharded,
)
from pyderecho.core.view import NodeId, View
from pyderecho.layouts import resolve_layout


def view_of(*members: NodeId, epoch: int = 1) -> View:
    return View(epoch, members)


def members_of(allocation: Allocation, name: str) -> list[list[tuple[NodeId, ...]]]:
    return [[shard.members for shard in subgroup] for subgroup in allocation[name]]


def inadequacy(layout: Callable[[View], Allocation], view: View) -> str:
    result = compute_layout(layout, view)
    assert not result.adequate
    assert result.shards == ()
    return result.reason


# --- one_subgroup and sharded, sized from the pool ------------------------------------------------


def test_one_subgroup_of_fixed_size_takes_the_lowest_ranks() -> None:
    allocation = layout_of({"A": one_subgroup(3)})(view_of(10, 4, 7, 1, 9))
    assert members_of(allocation, "A") == [[(10, 4, 7)]]
    assert allocation["A"][0][0].mode is Mode.ORDERED
    assert allocation["A"][0][0].senders is None


def test_one_subgroup_between_min_and_max_takes_what_there_is_up_to_max() -> None:
    layout = layout_of({"A": one_subgroup(min_size=2, max_size=4)})
    assert members_of(layout(view_of(0, 1, 2)), "A") == [[(0, 1, 2)]]
    assert members_of(layout(view_of(*range(6))), "A") == [[(0, 1, 2, 3)]]
    assert inadequacy(layout, view_of(0)) == (
        "type 'A' needs 2 members but had 1 in view 1: 1 members, 0 reserved, "
        "0 taken by earlier types"
    )


def test_one_subgroup_with_only_a_max_needs_one_member() -> None:
    layout = layout_of({"A": one_subgroup(max_size=2)})
    assert members_of(layout(view_of(5)), "A") == [[(5,)]]
    assert members_of(layout(view_of(5, 6, 7)), "A") == [[(5, 6)]]


def test_one_subgroup_with_no_max_takes_every_spare_member() -> None:
    layout = layout_of({"A": one_subgroup(2), "B": one_subgroup(min_size=1)})
    assert members_of(layout(view_of(*range(7))), "B") == [[(2, 3, 4, 5, 6)]]


def test_sharded_of_fixed_size_cuts_consecutive_runs_and_leaves_the_rest() -> None:
    allocation = layout_of({"S": sharded(3, 2)})(view_of(*range(7)))
    assert members_of(allocation, "S") == [[(0, 1), (2, 3), (4, 5)]]


@pytest.mark.parametrize(
    ("num_members", "sizes"),
    [
        (6, [2, 2, 2]),
        (7, [3, 2, 2]),
        (8, [3, 3, 2]),
        (10, [4, 3, 3]),
        (12, [4, 4, 4]),
        (20, [4, 4, 4]),
    ],
)
def test_sharded_flexible_spreads_spare_members_evenly(num_members: int, sizes: list[int]) -> None:
    allocation = layout_of({"S": sharded(3, min_size=2, max_size=4)})(view_of(*range(num_members)))
    shards = members_of(allocation, "S")[0]
    assert [len(shard) for shard in shards] == sizes
    assert [m for shard in shards for m in shard] == list(range(sum(sizes)))


def test_sharded_flexible_is_inadequate_below_every_shards_minimum() -> None:
    reason = inadequacy(layout_of({"S": sharded(3, min_size=2, max_size=4)}), view_of(*range(5)))
    assert reason.startswith("type 'S' needs 6 members but had 5 in view 1")


def test_several_subgroups_each_get_their_shards() -> None:
    layout = layout_of({"S": sharded(2, 1, num_subgroups=2), "T": one_subgroup(1)})
    result = compute_layout(layout, view_of(*range(5)))
    assert members_of(layout(result.view), "S") == [[(0,), (1,)], [(2,), (3,)]]
    assert dict(result.subgroup_ids) == {("S", 0): 0, ("S", 1): 1, ("T", 0): 2}
    assert [(ref.subgroup, ref.shard) for ref in result.shards_of(3)] == [(1, 1)]


def test_modes_can_differ_per_shard() -> None:
    allocation = layout_of({"S": sharded(3, 1, mode=[Raw, Paxos, Mode.ORDERED])})(view_of(0, 1, 2))
    assert [shard.mode for shard in allocation["S"][0]] == [Raw, Paxos, Mode.ORDERED]


def test_one_mode_applies_to_every_shard() -> None:
    allocation = layout_of({"S": sharded(2, 1, mode=Paxos)})(view_of(0, 1))
    assert [shard.mode for shard in allocation["S"][0]] == [Paxos, Paxos]


def test_senders_are_the_lowest_ranked_members_of_each_shard() -> None:
    allocation = layout_of({"S": sharded(2, 3, senders=2)})(view_of(9, 8, 7, 6, 5, 4))
    assert [shard.senders for shard in allocation["S"][0]] == [(9, 8), (6, 5)]
    assert allocation["S"][0][1].sending_members == (6, 5)


def test_more_senders_than_members_lets_every_member_send() -> None:
    allocation = layout_of({"A": one_subgroup(2, senders=5)})(view_of(3, 4))
    assert allocation["A"][0][0].sending_members == (3, 4)


# --- the order types are served in -------------------------------------------------------------


def test_minimums_of_later_types_come_before_spares_of_earlier_ones() -> None:
    layout = layout_of({"A": one_subgroup(min_size=1), "B": one_subgroup(3)})
    allocation = layout(view_of(*range(5)))
    assert members_of(allocation, "A") == [[(0, 1)]]
    assert members_of(allocation, "B") == [[(2, 3, 4)]]


def test_spare_members_fill_types_in_mapping_order() -> None:
    layout = layout_of(
        {"A": one_subgroup(min_size=1, max_size=3), "B": one_subgroup(min_size=1, max_size=3)}
    )
    allocation = layout(view_of(*range(5)))
    assert members_of(allocation, "A") == [[(0, 1, 2)]]
    assert members_of(allocation, "B") == [[(3, 4)]]


def test_spare_members_run_out_before_later_types_reach_their_maximum() -> None:
    layout = layout_of(
        {
            "A": one_subgroup(min_size=1, max_size=2),
            "B": one_subgroup(min_size=1, max_size=3),
            "C": one_subgroup(2),
        }
    )
    allocation = layout(view_of(*range(6)))
    assert [members_of(allocation, name) for name in "ABC"] == [
        [[(0, 1)]],
        [[(2, 3)]],
        [[(4, 5)]],
    ]


def test_inadequacy_names_the_first_type_short_of_members() -> None:
    layout = layout_of({"A": one_subgroup(3), "B": sharded(2, 2), "C": one_subgroup(9)})
    assert inadequacy(layout, view_of(*range(6))) == (
        "type 'B' needs 4 members but had 3 in view 1: 6 members, 0 reserved, "
        "3 taken by earlier types"
    )


def test_a_view_without_members_is_inadequate() -> None:
    assert inadequacy(layout_of({"G": every_member()}), View(4, ())) == "view 4 has no members"


# --- every_member, reserved ids and overlap ---------------------------------------------------


def test_every_member_holds_the_whole_view_and_takes_nothing_from_other_types() -> None:
    layout = layout_of({"G": every_member(Raw, senders=1), "A": one_subgroup(2)})
    allocation = layout(view_of(3, 1, 2))
    assert members_of(allocation, "G") == [[(3, 1, 2)]]
    assert allocation["G"][0][0].mode is Raw
    assert allocation["G"][0][0].senders == (3,)
    assert members_of(allocation, "A") == [[(3, 1)]]


def test_reserved_shard_takes_exactly_its_ids_in_rank_order() -> None:
    layout = layout_of({"R": one_subgroup(reserved=[7, 2, 5])})
    assert members_of(layout(view_of(2, 3, 5, 6, 7)), "R") == [[(2, 5, 7)]]


def test_reserved_ids_stay_out_of_the_pool_even_when_absent() -> None:
    layout = layout_of({"P": one_subgroup(min_size=1), "R": one_subgroup(reserved=[1, 9])})
    with pytest.raises(InadequateView, match=r"type 'R' needs reserved members \[9\], absent"):
        layout(view_of(0, 1, 2, 3))
    allocation = layout(view_of(0, 1, 2, 9))
    assert members_of(allocation, "P") == [[(0, 2)]]
    assert members_of(allocation, "R") == [[(1, 9)]]


def test_reserved_ids_shared_by_two_types_make_their_subgroups_overlap() -> None:
    layout = layout_of(
        {"A": one_subgroup(reserved=[0, 1, 2]), "B": one_subgroup(reserved=[1, 2, 3], mode=Paxos)}
    )
    result = compute_layout(layout, view_of(0, 1, 2, 3))
    assert result.adequate
    assert [(ref.type_name, ref.layout.mode) for ref in result.shards_of(2)] == [
        ("A", Mode.ORDERED),
        ("B", Paxos),
    ]
    assert [ref.type_name for ref in result.shards_of(0)] == ["A"]


def test_sharded_reserved_names_each_shard_with_its_own_mode() -> None:
    layout = layout_of({"S": sharded(2, reserved=[[0, 1], [3, 2]], mode=[Raw, Paxos])})
    allocation = layout(view_of(3, 2, 1, 0))
    assert members_of(allocation, "S") == [[(1, 0), (3, 2)]]
    assert [shard.mode for shard in allocation["S"][0]] == [Raw, Paxos]


def test_reserved_and_pooled_types_can_overlap_through_shared_reserved_ids() -> None:
    layout = layout_of(
        {
            "Front": sharded(2, reserved=[[0, 1], [2, 3]]),
            "Audit": one_subgroup(reserved=[1, 3]),
            "Store": one_subgroup(min_size=2),
        }
    )
    allocation = layout(view_of(*range(7)))
    assert members_of(allocation, "Audit") == [[(1, 3)]]
    assert members_of(allocation, "Store") == [[(4, 5, 6)]]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (one_subgroup, "give shard_size, min_size/max_size or reserved"),
        (lambda: one_subgroup(0), "at least one member, min_size is 0"),
        (lambda: one_subgroup(3, max_size=4), "either shard_size or min_size/max_size"),
        (lambda: one_subgroup(min_size=4, max_size=3), "max_size 3 is below min_size 4"),
        (lambda: one_subgroup(2, senders=0), "senders must be at least 1, not 0"),
        (lambda: one_subgroup(2, reserved=[1, 2]), "give no sizes with them"),
        (lambda: one_subgroup(reserved=[]), "must each name at least one id"),
        (lambda: one_subgroup(reserved=[1, 1]), "name an id twice"),
        (lambda: sharded(0, 2), "at least one subgroup of one shard, not 1 of 0"),
        (lambda: sharded(2, 2, num_subgroups=0), "not 0 of 2"),
        (lambda: sharded(2, 2, mode=[Raw]), "1 modes given for 2 shards"),
        (lambda: sharded(2, reserved=[[0, 1]]), "1 reserved shards given for 2 shards"),
        (lambda: sharded(2, reserved=[[0, 1], [1, 2]]), "name an id twice"),
        (lambda: sharded(1, reserved=[[0]], num_subgroups=2), "one subgroup"),
        (lambda: sharded(2, reserved=[[0], [1]], mode=[Raw]), "1 modes given for 2 shards"),
        (lambda: every_member(senders=0), "senders must be at least 1, not 0"),
    ],
)
def test_malformed_policies_are_refused_when_built(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make()


# --- compute_layout's checks ------------------------------------------------------------------


def test_compute_layout_refuses_a_member_in_two_shards_of_one_subgroup() -> None:
    def bad(view: View) -> Allocation:
        return {"T": [[ShardLayout((0, 1)), ShardLayout((2, 1))]]}

    with pytest.raises(ValueError, match=r"member 1 in both shard 0 and shard 1 of T\[0\]"):
        compute_layout(bad, view_of(0, 1, 2))


def test_compute_layout_allows_a_member_in_two_subgroups() -> None:
    def overlapping(view: View) -> Allocation:
        return {"T": [[ShardLayout((0, 1))], [ShardLayout((1, 2))]]}

    result = compute_layout(overlapping, view_of(0, 1, 2))
    assert [(ref.subgroup, ref.shard) for ref in result.shards_of(1)] == [(0, 0), (1, 0)]


# --- the built-in layouts ---------------------------------------------------------------------


def test_seed_example_on_1025_members_puts_each_member_in_exactly_one_shard() -> None:
    members = tuple(range(3000, 4025))
    result = compute_layout(seed_example(), View(7, members))
    assert result.adequate
    assert dict(result.subgroup_ids) == {("LoadBalancer", 0): 0, ("Cache", 0): 1, ("Backend", 0): 2}
    assert len(result.shards) == 502
    placed = sorted(m for ref in result.shards for m in ref.layout.members)
    assert placed == list(members)
    balancer, *cache, backend = result.shards
    assert balancer.layout.members == members[:3]
    assert [ref.layout.members for ref in cache] == [members[i : i + 2] for i in range(3, 1003, 2)]
    assert {ref.layout.mode for ref in cache} == {Mode.ORDERED}
    assert (backend.type_name, backend.layout.mode) == ("Backend", Paxos)
    assert backend.layout.members == members[1003:]


def test_seed_example_gives_members_beyond_1025_to_the_backend() -> None:
    allocation = seed_example()(view_of(*range(1030)))
    assert members_of(allocation, "Backend") == [[tuple(range(1003, 1030))]]


def test_seed_example_on_1024_members_is_inadequate() -> None:
    assert inadequacy(seed_example(), view_of(*range(1024))) == (
        "type 'Backend' needs 22 members but had 21 in view 1: 1024 members, 0 reserved, "
        "1003 taken by earlier types"
    )


def test_builtin_registry_offers_the_documented_names() -> None:
    assert set(builtin_layouts) >= {
        "seed-example",
        "every-member",
        "overlap-example",
        "shards-of-3",
    }


def test_every_member_builtin_holds_one_subgroup_of_the_whole_view() -> None:
    allocation = builtin_layouts["every-member"]()(view_of(4, 2))
    assert members_of(allocation, "Group") == [[(4, 2)]]


def test_overlap_example_puts_the_lowest_ranks_in_two_subgroups() -> None:
    layout = builtin_layouts["overlap-example"]()
    result = compute_layout(layout, view_of(8, 6, 4, 2))
    assert [ref.type_name for ref in result.shards_of(4)] == ["Group", "Trio"]
    assert [ref.type_name for ref in result.shards_of(2)] == ["Group"]
    assert "type 'Trio' needs 3 members but had 2" in inadequacy(layout, view_of(8, 6))


def test_shards_of_3_needs_six_members() -> None:
    layout = builtin_layouts["shards-of-3"]()
    assert members_of(layout(view_of(*range(7))), "Shards") == [[(0, 1, 2), (3, 4, 5)]]
    assert "needs 6 members but had 5" in inadequacy(layout, view_of(*range(5)))


# --- resolve_layout ---------------------------------------------------------------------------


@pytest.fixture
def module_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, str], None]]:
    """Writes importable modules for ``module:function`` specs, and forgets them afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(source)
        importlib.invalidate_caches()
        written.append(name)

    yield write
    for name in written:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("name", sorted(builtin_layouts))
def test_resolve_layout_finds_each_builtin(name: str) -> None:
    assert resolve_layout(name) == builtin_layouts[name]()


def test_resolve_layout_imports_a_module_function(module_dir: Callable[[str, str], None]) -> None:
    module_dir(
        "layout_spec_ok",
        "from pyderecho.core.layout import ShardLayout\n"
        "def pairs(view):\n"
        "    return {'P': [[ShardLayout(view.members[:2])]]}\n",
    )
    layout = resolve_layout("layout_spec_ok:pairs")
    assert layout.__name__ == "pairs"
    assert compute_layout(layout, view_of(5, 6, 7)).shards[0].layout.members == (5, 6)


def test_resolve_layout_lists_the_builtins_for_an_unknown_name() -> None:
    with pytest.raises(ValueError) as caught:
        resolve_layout("seed")
    assert str(caught.value) == (
        "unknown layout 'seed': give one of every-member, overlap-example, seed-example, "
        "shards-of-3, or module:function"
    )


@pytest.mark.parametrize("spec", ["pyderecho.core.layout:", ":seed_example"])
def test_resolve_layout_refuses_a_half_spec(spec: str) -> None:
    with pytest.raises(ValueError, match=f"layout '{spec}' is not of the form module:function"):
        resolve_layout(spec)


def test_resolve_layout_reports_a_missing_module() -> None:
    with pytest.raises(ValueError, match=r"'no_such_pkg\.sub:f': no module named 'no_such_pkg'"):
        resolve_layout("no_such_pkg.sub:f")


def test_resolve_layout_tells_a_missing_dependency_from_a_missing_module(
    module_dir: Callable[[str, str], None],
) -> None:
    module_dir("layout_spec_dep", "import no_such_dependency\n")
    with pytest.raises(ValueError, match="importing 'layout_spec_dep' failed: No module named"):
        resolve_layout("layout_spec_dep:f")


def test_resolve_layout_reports_a_module_that_fails_to_import(
    module_dir: Callable[[str, str], None],
) -> None:
    module_dir("layout_spec_boom", "raise RuntimeError('boom')\n")
    with pytest.raises(
        ValueError, match=r"importing 'layout_spec_boom' failed: RuntimeError\('boom'"
    ):
        resolve_layout("layout_spec_boom:f")


def test_resolve_layout_reports_a_missing_attribute() -> None:
    with pytest.raises(
        ValueError, match=r"module 'pyderecho\.core\.layout' has no attribute 'nothing_here'"
    ):
        resolve_layout("pyderecho.core.layout:nothing_here")


def test_resolve_layout_refuses_what_is_not_callable() -> None:
    with pytest.raises(ValueError, match="names a dict, not a function of the view"):
        resolve_layout("pyderecho.core.layout:builtin_layouts")


def test_resolve_layout_refuses_a_factory_in_place_of_a_layout_function() -> None:
    with pytest.raises(ValueError, match=r"cannot be called with a view .*not a factory of one"):
        resolve_layout("pyderecho.core.layout:seed_example")


def test_resolve_layout_accepts_a_callable_without_a_signature() -> None:
    layout: object = resolve_layout("builtins:dict")
    assert layout is dict


# --- properties -------------------------------------------------------------------------------


policies = st.lists(
    st.tuples(
        st.integers(1, 6),  # shards
        st.integers(1, 2),  # subgroups
        st.integers(1, 4),  # min_size
        st.integers(0, 4) | st.none(),  # max_size - min_size
    ),
    min_size=1,
    max_size=3,
)


@given(members=st.lists(st.integers(0, 10_000), unique=True, max_size=80), specs=policies)
def test_sharded_allocation_is_a_pure_function_of_the_view(
    members: list[NodeId], specs: list[tuple[int, int, int, int | None]]
) -> None:
    def make() -> Callable[[View], Allocation]:
        return layout_of(
            {
                f"T{i}": sharded(
                    shards,
                    min_size=low,
                    max_size=None if extra is None else low + extra,
                    num_subgroups=subgroups,
                )
                for i, (shards, subgroups, low, extra) in enumerate(specs)
            }
        )

    result = compute_layout(make(), View(3, tuple(members)))
    needed = sum(shards * subgroups * low for shards, subgroups, low, _ in specs)
    assert result.adequate == (len(members) >= needed)
    if not result.adequate:
        return
    assert compute_layout(make(), View(3, tuple(members))) == result
    placed = [m for ref in result.shards for m in ref.layout.members]
    # Pool members go to one shard each, lowest ranks first, as many as the maximums allow.
    assert placed == members[: len(placed)]
    room = sum(
        shards * subgroups * (low + extra)
        for shards, subgroups, low, extra in specs
        if extra is not None
    )
    unbounded = any(extra is None for *_, extra in specs)
    assert len(placed) == (len(members) if unbounded else min(len(members), room))
    for i, (_, _, low, extra) in enumerate(specs):
        sizes = [len(ref.layout.members) for ref in result.shards if ref.type_name == f"T{i}"]
        assert min(sizes) >= low
        assert extra is None or max(sizes) <= low + extra
        assert max(sizes) - min(sizes) <= 1
