"""The trainer's score prior and recency levers, end to end on small synthetic streams."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import pytest
import torch

from models.prior import TrendTable
from stream.behaviours import Behaviour
from stream.errors import ConfigError
from stream.events import Interaction
from stream.learn.trainer import IncrementalTrainer
from stream.settings.training import TrainerSettings
from stream.state.graph_store import DecayedGraphStore, PartitionBatch
from tests.stream.learn.budgets import UNCAPPED

HOUR = 3_600_000
BEHAVIOURS = {"click": Behaviour(1.0, 24 * HOUR), "purchase": Behaviour(5.0, 240 * HOUR)}
EPS = 1e-3
PRIOR = TrainerSettings(
    dim=16,
    batch_size=256,
    device="cpu",
    trend_half_lives_ms=(HOUR, 24 * HOUR),
    **UNCAPPED,  # type: ignore[arg-type]
)


def block_stream(seed: int, n: int, t0: int = 1_000_000, step_ms: int = 1_000):
    """Users u0..u11 in 3 groups; group g interacts only with items g*6 .. g*6+5."""
    rng = random.Random(seed)
    return [
        Interaction(f"u{u}", f"i{(u % 3) * 6 + rng.randrange(6)}", "click", t0 + step_ms * k)
        for k, u in enumerate(rng.randrange(12) for _ in range(n))
    ]


def trending_stream(seed: int, phases: int, per_phase: int) -> list[Interaction]:
    """Every hour two new items are hot (80 % of events); the rest spread over 20 items."""
    rng = random.Random(seed)
    out = []
    for phase in range(phases):
        hot = (f"h{2 * phase}", f"h{2 * phase + 1}")
        for k in range(per_phase):
            item = rng.choice(hot) if rng.random() < 0.8 else f"c{rng.randrange(20)}"
            ts = 10 * HOUR + phase * HOUR + k * (HOUR // per_phase)
            out.append(Interaction(f"u{rng.randrange(200)}", item, "click", ts))
    return out


def test_published_dot_product_is_the_models_score() -> None:
    trainer = IncrementalTrainer(PRIOR, BEHAVIOURS, EPS)
    for start in range(0, 120, 40):
        trainer.learn(block_stream(0, 120)[start : start + 40])
    users, items = ["u0", "u5"], [f"i{i}" for i in range(18)]
    user_vec, item_vec = trainer.vectors("user", users), trainer.vectors("item", items)
    assert user_vec.shape == (2, PRIOR.dim + 1) == (2, PRIOR.out_dim)
    assert user_vec[:, -1].tolist() == [1.0, 1.0]  # the user side carries the weight
    # the model's score, from its parts: cosine of the encoder's vectors plus the prior
    graph = trainer._graph(prune=False)
    rows_u = trainer.registry.rows("user", users)
    rows_i = trainer.registry.rows("item", items)
    z_u, z_i = trainer.encoder.embed(graph, rows_u, rows_i)
    assert trainer.score_prior is not None
    features = trainer.score_prior.trend.features(trainer.encoder.num_items)[rows_i]
    with torch.no_grad():
        prior = trainer.score_prior.prior.item_prior(features)
    expected = z_u @ z_i.T + prior[None, :]
    assert torch.allclose(user_vec @ item_vec.T, expected, atol=1e-5)
    assert torch.allclose(item_vec[:, -1], prior, atol=1e-6)


def test_the_prior_learns_what_is_rising() -> None:
    trainer = IncrementalTrainer(dataclasses.replace(PRIOR, lr=0.05), BEHAVIOURS, EPS)
    events = trending_stream(1, phases=12, per_phase=100)
    for start in range(0, len(events), 50):
        trainer.learn(events[start : start + 50])
    assert trainer.score_prior is not None
    short, long = trainer.score_prior.prior.mix.tolist()
    assert short > 0 and short > long  # the 1-hour count predicts the next event best
    # the items hot now carry a larger prior than those hot earlier, with as many events
    now, earlier = trainer.vectors("item", ["h22", "h20"])[:, -1].tolist()
    assert now > earlier


def test_a_fit_is_not_capped_by_the_live_step_budget(tmp_path: Path) -> None:
    events = block_stream(2, 600)
    settings = dataclasses.replace(PRIOR, max_steps_per_batch=1, batch_size=64)
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS, epsilon=EPS) as store:
        store.apply("t", [PartitionBatch(0, len(events), events)])
        trainer = IncrementalTrainer(settings, BEHAVIOURS, EPS)
        trainer.bootstrap(store)
        edges = store.counts().edges
    report = trainer.fit(epochs=3)
    assert report.steps == 3 * math.ceil(edges / 64) > 1
    assert trainer.learn(block_stream(3, 200, t0=5_000_000)).steps == 1


def test_prior_state_round_trip_and_foreign_half_lives_refused(tmp_path: Path) -> None:
    first, second = block_stream(4, 80), block_stream(5, 40, t0=2_000_000)
    # the full step: a local one's replay follows the mirror's slot order (not resumable
    # bit for bit)
    prior = dataclasses.replace(PRIOR, step_scope="full")
    a = IncrementalTrainer(prior, BEHAVIOURS, EPS)
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS, epsilon=EPS) as store:
        store.apply("t", [PartitionBatch(0, len(first), first)])
        for start in range(0, 80, 40):
            a.learn(first[start : start + 40])
        state = a.state_dict()
        b = IncrementalTrainer(prior, BEHAVIOURS, EPS)
        b.load_state_dict(state)
        b.bootstrap(store)  # a loaded trend is kept, not recounted from the store
        other = dataclasses.replace(PRIOR, trend_half_lives_ms=(2 * HOUR, 24 * HOUR))
        with pytest.raises(ConfigError, match="half-lives"):
            IncrementalTrainer(other, BEHAVIOURS, EPS).load_state_dict(state)
    ra, rb = a.learn(second), b.learn(second)
    assert ra.loss == rb.loss
    assert (ra.changed_users, ra.changed_items) == (rb.changed_users, rb.changed_items)
    items = [f"i{i}" for i in range(18)]
    assert torch.equal(a.vectors("item", items), b.vectors("item", items))


def test_bootstrap_without_a_checkpoint_counts_the_stores_edges(tmp_path: Path) -> None:
    events = [Interaction("u0", "a", "click", 1_000)] + [
        Interaction(f"u{k}", "b", "click", 1_000 + k) for k in range(1, 4)
    ]
    with DecayedGraphStore(tmp_path / "g", BEHAVIOURS, epsilon=EPS) as store:
        store.apply("t", [PartitionBatch(0, len(events), events)])
        trainer = IncrementalTrainer(PRIOR, BEHAVIOURS, EPS)
        trainer.bootstrap(store)
    assert trainer.score_prior is not None and trainer.score_prior.from_store
    rows = trainer.registry.rows("item", ["a", "b"])
    features = trainer.score_prior.trend.features(trainer.encoder.num_items)[rows]
    assert bool((features[1] > features[0]).all())  # three events outweigh one, at any scale


def test_a_new_user_is_placed_by_its_first_events() -> None:
    trainer = IncrementalTrainer(PRIOR, BEHAVIOURS, EPS)
    history = block_stream(7, 600)
    for start in range(0, len(history), 100):
        trainer.learn(history[start : start + 100])
    # a new user takes two items of group 1 (items i6..i11)
    t = history[-1].ts + 1_000
    trainer.learn([Interaction("new", "i6", "click", t), Interaction("new", "i7", "click", t)])
    items = trainer.vectors("item", [f"i{i}" for i in range(18)])
    scores = trainer.vectors("user", ["new"]) @ items.T
    scores[0, [6, 7]] = -math.inf  # what the user already had
    top = scores[0].topk(4).indices.tolist()
    assert all(6 <= i < 12 for i in top)


@pytest.mark.parametrize("moments", [[0, 0, 0], [0, 1, 1]])
def test_shared_negatives_prior_is_each_rows_own(moments: list[int]) -> None:
    trainer = IncrementalTrainer(PRIOR, BEHAVIOURS, EPS)
    trainer.learn(trending_stream(0, 2, 60))
    assert trainer.score_prior is not None
    with torch.no_grad():
        trainer.score_prior.prior.mix.copy_(torch.tensor([0.7, -0.3]))
    features = torch.rand(2, 20, 2, generator=torch.Generator().manual_seed(0))
    trend = (TrendTable(features), torch.tensor(moments))
    pool = torch.tensor([3, 0, 19, 3])
    shared = trainer._objective.shared_item_prior(trend, pool)  # read once per moment
    each = trainer._objective.item_prior(trend, pool.repeat(3, 1))  # rows of their own
    assert torch.allclose(shared, each) and shared.shape == (3, 4)
