"""The ``retrain`` ceiling: its store keeps the full history; its epochs come from the warm-up."""

from __future__ import annotations

from pathlib import Path

from stream.behaviours import DAY_MS, DEFAULT_BEHAVIOURS
from stream.evaluation.catalogue import MethodOptions, build_methods
from stream.evaluation.methods import TrainerRecipe
from stream.evaluation.prequential import ProtocolSettings, apply_events, run_prequential
from stream.evaluation.retrain import FullHistoryRetrain, HistoryStore
from stream.events import Interaction
from stream.settings import TrainerSettings
from stream.state.graph_store import DecayedGraphStore

YEAR_MS = 365 * DAY_MS


def _years_of_events() -> list[Interaction]:
    """Ten years of clicks and views, one a week, each on a new (user, item) pair."""
    return [
        Interaction(f"u{k % 7}", f"i{k}", "click" if k % 2 else "view", k * 7 * DAY_MS)
        for k in range(10 * 52)
    ]


def test_the_full_history_store_never_prunes(tmp_path: Path) -> None:
    events = _years_of_events()
    history = HistoryStore(DEFAULT_BEHAVIOURS, epsilon=1e-3)
    try:
        for start in range(0, len(events), 50):  # fed batch by batch, as the protocol does
            history.add(events[start : start + 50])
        counts = history.store.counts()
        assert counts.pruned_total == 0
        assert counts.edges == len({(e.user_id, e.item_id, e.event_type) for e in events})
        assert set(history.behaviours) == set(DEFAULT_BEHAVIOURS)
        assert all(history.behaviours[n].beta == b.beta for n, b in DEFAULT_BEHAVIOURS.items())
    finally:
        history.close()
    # the live store, with the worker's half-lives, forgets most of those years
    with DecayedGraphStore(tmp_path / "live", DEFAULT_BEHAVIOURS, 1e-3) as live:
        apply_events(live, events, 50, 0)
        assert live.counts().pruned_total > len(events) // 2


def _tiny_recipe(epochs: int = 2) -> TrainerRecipe:
    tiny = TrainerSettings(dim=8, batch_size=64, layers=1)
    return TrainerRecipe(tiny, dict(DEFAULT_BEHAVIOURS), 1e-3, epochs)


def test_retrain_chooses_its_epochs_on_the_warmup_and_fits_on_everything() -> None:
    events = _years_of_events()[:200]
    retrain = FullHistoryRetrain(_tiny_recipe(), [1, 3], seed=0)
    settings = ProtocolSettings(warmup=0.5, chunks=2, micro_batch=20)
    result = run_prequential(events, [retrain], settings)
    tuning = result.described["retrain"]
    assert tuning["grid"] == [1, 3] and tuning["epochs"] == tuning["chosen"] in (1, 3)
    assert len(tuning["validation_recall@20"]) == 2
    assert result.methods["retrain"].learn_seconds > 0  # a fit before every chunk


def test_retrain_is_the_full_history_refit_and_retrain_decayed_the_old_one() -> None:
    options = MethodOptions(DEFAULT_BEHAVIOURS, _tiny_recipe(), retrain_epochs=(2,))
    ceiling, decayed = build_methods(["retrain", "retrain-decayed"], options)
    assert isinstance(ceiling, FullHistoryRetrain)
    assert ceiling.name == "retrain" and decayed.name == "retrain-decayed"
    half_lives = {b.half_life_ms for b in ceiling.recipe.behaviours.values()}
    assert min(half_lives) > 100 * YEAR_MS
