"""Events from a timestamped interaction file, for replay into Kafka.

The file is read by :func:`stream.evaluation.data.read_interactions`, the very reader
``streamgnn eval`` uses, so a replayed log and an evaluated log are the same events:
validated against the contract, exact duplicates dropped, sorted by time. ``ts`` is the
file's time, not the send time.

>>> from stream.events import Interaction
>>> list(replay_events([Interaction("u1", "i2", "rating", 881250949000, 4.0)]))
[{'user_id': 'u1', 'item_id': 'i2', 'event_type': 'rating', 'ts': 881250949000, 'weight': 4.0}]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from stream.events import Interaction


def replay_events(interactions: Iterable[Interaction]) -> Iterator[dict[str, object]]:
    """Each interaction as an event dict, in the given (time) order.

    ``weight`` is left out when it is 1 (the contract's default) and ``event_id`` when
    there is none, so the records stay small.
    """
    for interaction in interactions:
        event: dict[str, object] = {
            "user_id": interaction.user_id,
            "item_id": interaction.item_id,
            "event_type": interaction.event_type,
            "ts": interaction.ts,
        }
        if interaction.weight != 1.0:
            event["weight"] = interaction.weight
        if interaction.event_id is not None:
            event["event_id"] = interaction.event_id
        yield event
