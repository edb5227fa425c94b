"""``pyderecho demo``: the key-value service of examples/ as real processes, end to end.

The demo runs eight processes (seven founders, one joiner) over tcp on 127.0.0.1, kills one
under load, then kills every member at once and restarts the group from the Backend's logs,
and ends with every replica's digest and the checkers' verdicts. Its steps wait on what the
processes print, each bounded by a generous timeout, so a loaded machine makes it slower, not
flaky.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pyderecho.cli.demo import check_states, run_demo


def test_the_demo_ends_with_equal_digests_and_a_clean_verdict() -> None:
    lines: list[str] = []
    status = run_demo(lines.append, heartbeat_timeout_ms=2000)
    out = "\n".join(lines)
    assert status == 0, out
    assert "view 0: members [0, 1, 2, 3, 4, 5, 6]" in out
    assert (
        "layout: Routing [0, 1, 2, 3, 4, 5, 6]; LoadBalancer [0]; Backend [1, 2]; "
        "Cache shard 0 [3, 4], shard 1 [5, 6]"
    ) in out
    assert "view 1: members [0, 1, 2, 3, 5, 6], left [4]" in out
    assert re.search(r"member 5 is new to Cache shard 0: received its state from member 3, ", out)
    assert "joined [7]" in out
    assert re.search(r"member 7 is new to Cache shard 1: received its state from member 6, ", out)
    assert re.search(r"read back \d+ keys through the front: 0 differ", out)
    # The total restart: every member killed, the same members started again on their data
    # directories, the next view of the last one, and every acknowledged key in the Backend.
    assert "SIGKILL every member at once" in out
    assert "starting members [0, 1, 2, 3, 5, 6, 7] again on their data directories" in out
    assert "view 3: members [0, 1, 2, 3, 5, 6, 7]" in out
    assert re.search(r"the group is back in \d+\.\d\d s: .* view 3 \(the next of view 2\)", out)
    restored = re.search(
        r"read back (\d+) acknowledged keys from the Backend through the front: 0 lost", out
    )
    assert restored and int(restored.group(1)) > 0
    assert "the Backend's state after the restart is the one it had before the kill" in out
    assert re.search(
        r"total restart: the group was back in [\d.]+ s; nothing acknowledged was lost", out
    )
    # Routing, LoadBalancer, Backend, 2 Cache shards; before the kill and after the restart.
    assert out.count("-> equal") == 10 and "DIFFERENT" not in out
    assert "every shard holds one digest at all its replicas" in out
    assert "history checker over 8 delivery logs: no violations" in out
    assert re.search(r"state rule over \d+ state digests: no violations", out)
    assert out.rstrip().endswith("verdict: OK")


@pytest.mark.slow
def test_the_demo_fails_when_the_backend_is_not_logged() -> None:
    """The planted bug: a Backend that is ordered but not logged comes back empty after the
    restart, and the demo must say that acknowledged keys were lost."""
    lines: list[str] = []
    status = run_demo(lines.append, heartbeat_timeout_ms=2000, planted_volatile_backend=True)
    out = "\n".join(lines)
    started = re.search(r"in (/\S+pyderecho-demo-\S+)$", lines[0])
    if started:
        shutil.rmtree(Path(started.group(1)), ignore_errors=True)
    assert status == 1, out
    assert re.search(r"total restart: .* \d+ acknowledged keys LOST", out), out
    assert out.rstrip().endswith("verdict: FAILED")


def _digest(
    reporter: int, position: list[int], digest: str, kind: str = "view"
) -> dict[str, object]:
    return {
        "reporter": reporter,
        "member": reporter,
        "key": ["Cache", 0, 1],
        "position": position,
        "digest": digest,
        "kind": kind,
    }


def test_the_state_rule_catches_replicas_that_disagree_and_states_nobody_sent() -> None:
    agree = [_digest(3, [1, 5], "aa"), _digest(4, [1, 5], "aa"), _digest(4, [1, 6], "bb")]
    assert check_states(agree) == ([], 3, 0)
    problems, _, _ = check_states([*agree, _digest(5, [1, 5], "cc")])
    assert len(problems) == 1 and "replicas disagree" in problems[0]
    sent = {**_digest(3, [2, 0], "dd", "sent"), "member": 7}
    problems, _, transfers = check_states([sent, _digest(7, [2, 0], "dd", "received")])
    assert problems == [] and transfers == 1
    problems, _, _ = check_states([sent, _digest(7, [2, 0], "ee", "received")])
    assert any("that nobody sent it" in p for p in problems)
