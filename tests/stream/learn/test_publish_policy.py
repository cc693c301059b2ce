"""The publish policy: what a step reports, against a reference computed from scratch."""

from __future__ import annotations

import math

import pytest
import torch

from stream.learn import publish_policy
from stream.learn.publish_policy import NEVER_SPAN, PublishPolicy

DIM = 4


@pytest.mark.parametrize("span", [NEVER_SPAN, 5])  # the backlog read in one span, or many
def test_reports_the_largest_moves_first_never_reported_rows_before_all(
    span: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random calls over a table with a backlog of never-reported rows (a loaded graph's):
    each call reports its touched rows, and of the rest every row over the threshold when
    they are at most ``max_drift``, else ``max_drift`` rows none of which moved less than a
    row left pending (never-reported rows counting as moved infinitely); a row is pending
    exactly when it moved past the threshold and was not reported; nothing else is
    reported, and a report records the row's current vector. Never-reported rows go lowest
    first, rows handed to new ids (forgotten, then re-embedded) among them."""
    monkeypatch.setattr(publish_policy, "NEVER_SPAN", span)
    gen = torch.Generator().manual_seed(0)
    rows, threshold, cap = 200, 0.5, 7
    policy = PublishPolicy(DIM, torch.device("cpu"), threshold, cap)
    policy.grow("user", rows)
    vectors = torch.randn(rows, DIM, generator=gen)
    last: torch.Tensor = torch.full((rows, DIM), math.nan)  # what was reported, by row
    seen_backlog_drain = seen_forgotten_first = False
    forgotten = torch.zeros(0, dtype=torch.long)
    for call in range(60):
        moved = torch.randperm(rows, generator=gen)[:20]
        vectors[moved] += torch.randn(20, DIM, generator=gen) * 0.6
        touched = torch.randperm(rows, generator=gen)[:2]
        # the first call compares every row (a full step); later ones their candidates,
        # the rows forgotten since the last call among them (a refresh re-embeds them)
        candidates = None if call == 0 else torch.cat([moved, forgotten])
        before = last.clone()
        chosen = policy.select("user", vectors, touched, candidates)
        assert torch.equal(chosen, torch.unique(chosen))  # sorted, each once
        distance = (vectors - before).norm(dim=1)
        distance[before.isnan().any(dim=1)] = math.inf
        over = distance > threshold
        drift = set(chosen.tolist()) - set(touched.tolist())
        assert all(bool(over[r]) for r in drift) and len(drift) <= cap
        left = over.clone()
        left[chosen] = False
        if bool(left.any()):  # the cap was spent, on rows that moved no less than these
            assert int(over[chosen].sum()) >= cap
            if drift:
                assert min(float(distance[r]) for r in drift) >= float(distance[left].max())
            seen_backlog_drain |= bool(distance[left].isinf().any())
            never_chosen = [r for r in drift if math.isinf(float(distance[r]))]
            never_left = left & distance.isinf()
            if never_chosen and bool(never_left.any()):  # the lowest never-reported first
                assert max(never_chosen) < int(never_left.nonzero().min())
                seen_forgotten_first |= bool(set(never_chosen) & set(forgotten.tolist()))
        assert torch.equal(policy._pending["user"], left)
        last[chosen] = vectors[chosen]
        forgotten = torch.zeros(0, dtype=torch.long)
        if call % 5 == 4 and call < 55:  # rows handed to new ids, low ones too
            forgotten = torch.randperm(rows // 4, generator=gen)[:3]
            policy.forget("user", forgotten)
            last[forgotten] = math.nan
    assert seen_backlog_drain  # the never-reported backlog was drained a cap at a time
    assert seen_forgotten_first  # forgotten rows below the backlog came before it
    assert not bool(last.isnan().any())  # every row reported by now


def test_a_resumed_policy_compares_its_pending_rows_again() -> None:
    """Distances are not saved: a restored policy's pending rows are compared afresh on
    its first call, and the largest move is reported first."""
    policy = PublishPolicy(DIM, torch.device("cpu"), 0.5, 1)
    policy.grow("user", 3)
    vectors = torch.zeros(3, DIM)
    policy.select("user", vectors)  # one row reported (never reported: all due)
    policy.select("user", vectors, candidates=torch.zeros(0, dtype=torch.long))
    policy.select("user", vectors, candidates=torch.zeros(0, dtype=torch.long))
    moved = vectors.clone()
    moved[0, 0], moved[2, 0] = 1.0, 3.0  # both past the threshold, row 2 the farther
    policy.select("user", moved, candidates=torch.tensor([0, 2]))  # row 2 reported
    assert policy._pending["user"].tolist() == [True, False, False]
    moved[0, 0] = 0.6  # row 0 moves back a little, pending at its old distance in the image
    resumed = PublishPolicy(DIM, torch.device("cpu"), 0.5, 1)
    resumed.load_state_dict(policy.state_dict())
    moved[1, 0] = 2.0  # row 1 re-embedded after the restore
    chosen = resumed.select("user", moved, candidates=torch.tensor([1]))
    assert chosen.tolist() == [1]  # row 0 compared again: 0.6, behind row 1's 2.0
    assert resumed._pending["user"].tolist() == [True, False, False]


def test_rows_given_again_are_the_reported_ones_and_count_as_reported_then() -> None:
    """What a topic that lost its vectors is given again: the rows reported so far (not
    those still waiting for a first report, nor rows past ``live``); once given, a row
    pending by its old report is not, and its next move is measured from what was given."""
    policy = PublishPolicy(DIM, torch.device("cpu"), 0.5, 2)
    policy.grow("user", 6)
    vectors = torch.zeros(6, DIM)
    policy.select("user", vectors)  # rows 0 and 1 (never reported: the cap's lowest)
    vectors[0, 0] = 1.0  # past the threshold, left pending by a cap of 0 drift reports
    policy.max_drift = 1
    policy.select("user", vectors, candidates=torch.tensor([0]))  # row 2: never reported first
    assert policy._pending["user"][0]
    assert policy.reported_rows("user", live=6).tolist() == [0, 1, 2]
    assert policy.reported_rows("user", live=2).tolist() == [0, 1]
    rows = policy.reported_rows("user", live=6)
    policy.mark_reported("user", rows, vectors[rows])
    assert not policy._pending["user"][0]
    vectors[0, 0] = 1.3  # 0.3 from what was given: not due
    vectors[1, 0] = 0.7  # 0.7 from what was given: due
    policy.max_drift = 0
    chosen = policy.select("user", vectors, candidates=torch.tensor([0, 1]))
    assert 0 not in chosen.tolist() and 1 in chosen.tolist()
