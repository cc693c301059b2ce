"""Writing the graph changelog again from the store (:mod:`stream.ingest.changelog`).

Committed offsets and changelog are the truth together, so a partition the group committed
offsets for must have its state in the changelog. It has none when the topic was deleted
(under a running worker, or while none ran), or when the group ran without
``--changelog`` before. Every start checks (:func:`write_missing_state`): such a partition
is written again from a store that holds it at or past the committed offset, or the start
is refused, naming it and the ways out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stream.errors import ChangelogError
from stream.ingest.changelog import (
    ADMIN_TIMEOUT_S,
    Changelog,
    ChangelogInterrupted,
)
from stream.kafka.access import not_authorized
from stream.kafka.clients import confluent_consumer
from stream.kafka.failure import kafka_error
from stream.kafka.group import Member, conflicts, group_admin, group_members, lingering_s
from stream.settings import KafkaSettings
from stream.state.graph_store import DecayedGraphStore
from stream.state.partition_state import partition_records

if TYPE_CHECKING:
    from confluent_kafka import Consumer

log = logging.getLogger("streamgnn.changelog")

# Errors of a group whose coordinator is moving or loading (a fresh broker's first group):
# asked again until ADMIN_TIMEOUT_S.
_COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError._WAIT_COORD,
        KafkaError._TIMED_OUT,
    }
)


def write_missing_state(
    changelog: Changelog,
    store: DecayedGraphStore | None,
    interrupted: threading.Event | None = None,
) -> None:
    """Write again each partition of the changelog that lacks its state, from ``store``,
    in one transaction per partition with the group's offset moved to the store's
    position: where the store holds it at or past the committed offset (its state there
    is the state at that offset: applying is deterministic) and no other worker is in the
    group (moving an offset waits out this worker's previous run too). Raise
    :class:`ChangelogError` naming any other such partition and the ways out. Once
    ``interrupted`` is set, a wait (for the group, or a transaction) raises
    :class:`~stream.ingest.changelog.ChangelogInterrupted`: the next start repairs again."""
    k = changelog.kafka
    consumer = confluent_consumer(k, {"group.id": k.group_id, "logger": log})  # never joins
    try:
        committed = _committed(k, consumer)
        missing = _without_state(changelog, sorted(committed), interrupted)
        if not missing:
            return
        others = conflicts(group_members(k), True, k.instance_id)
        held = {
            p: at[0]
            for p in missing
            if store is not None
            and (at := store.position(k.interactions_topic, p)) is not None
            and at[0] >= committed[p]
        }
        if others or len(held) < len(missing):
            raise ChangelogError(
                _missing_state_message(k, changelog.topic, missing, committed, held, others)
            )
        assert store is not None  # held is empty without one
        moved = {p: at for p, at in held.items() if at > committed[p]}
        if moved:  # the coordinator takes offsets from outside the group only when empty
            _wait_for_an_empty_group(k, interrupted or threading.Event())
        for p, position in sorted(held.items()):
            records = partition_records(store, k.interactions_topic, p)
            changes = [(p, key, v) for key, v in records.items()]
            offsets = {p: position} if p in moved else {}
            changelog.commit(changes, offsets, consumer.consumer_group_metadata, interrupted)
            log.warning(
                "changelog %s[%d] held no state for group %s's offset %d on %s: wrote it "
                "again from the store (%d records, position %d)",
                changelog.topic,
                p,
                k.group_id,
                committed[p],
                k.interactions_topic,
                len(records),
                position,
            )
    finally:
        consumer.close()


def _wait_for_an_empty_group(k: KafkaSettings, interrupted: threading.Event) -> None:
    """Wait out this worker's previous run, a static member the coordinator keeps for
    a session timeout after it died."""
    deadline = time.monotonic() + lingering_s(k)
    admin = group_admin(k)  # one client for every check of the wait
    while members := group_members(k, admin):
        if time.monotonic() >= deadline:
            raise ChangelogError(
                f"group {k.group_id!r} still has members ({', '.join(map(str, members))}) "
                "after a session timeout: its changelog cannot be written again now"
            )
        if interrupted.wait(1.0):
            raise ChangelogInterrupted(f"waiting for group {k.group_id!r} to empty")


def _committed(k: KafkaSettings, consumer: Consumer) -> dict[int, int]:
    """The group's committed offset of each source partition that has one."""
    partitions = (
        consumer.list_topics(k.interactions_topic, ADMIN_TIMEOUT_S)
        .topics[k.interactions_topic]
        .partitions
    )
    asked = [TopicPartition(k.interactions_topic, p) for p in sorted(partitions)]
    deadline = time.monotonic() + ADMIN_TIMEOUT_S
    while True:
        try:
            found = consumer.committed(asked, timeout=ADMIN_TIMEOUT_S)
            return {tp.partition: tp.offset for tp in found if tp.offset >= 0}
        except KafkaException as exc:  # a new group's coordinator is still loading
            error = kafka_error(exc)
            refused = not_authorized(error, k, f"read group {k.group_id!r}'s offsets")
            if refused is not None:
                raise refused from None
            if error.code() not in _COORDINATOR_MOVING:
                raise
            if time.monotonic() >= deadline:
                raise ChangelogError(
                    f"group {k.group_id!r}: committed offsets unreadable for "
                    f"{ADMIN_TIMEOUT_S:.0f} s: {error.str()}"
                ) from exc
            time.sleep(0.2)


def _without_state(
    changelog: Changelog, partitions: Sequence[int], interrupted: threading.Event | None
) -> list[int]:
    """Those of ``partitions`` whose changelog holds no committed record (a partition
    with state always holds its position record: compaction keeps the newest)."""
    reads = changelog.to_ends(partitions, "checking", interrupted, first_only=True)
    return sorted(p for _, ended in reads for p in ended)


def _missing_state_message(
    kafka: KafkaSettings,
    topic: str,
    missing: Sequence[int],
    committed: dict[int, int],
    held: dict[int, int],
    others: Sequence[Member],
) -> str:
    lacking = ", ".join(f"{p} (committed {committed[p]})" for p in missing)
    why = (
        f"other members are in the group ({', '.join(map(str, others))}): stop them first"
        if others
        else "this worker's store does not hold "
        + ", ".join(str(p) for p in missing if p not in held)
        + " at or past those offsets"
    )
    return (
        f"changelog {topic!r} holds no state for partitions {lacking} of "
        f"{kafka.interactions_topic!r}, for which group {kafka.group_id!r} committed offsets: "
        "it was deleted, or the group ran without --changelog before. It cannot be written "
        f"again from here: {why}. Start the worker whose store holds them, run without "
        "--changelog (the store is the truth then), or use a new group (the topic is "
        "replayed from its earliest offset)."
    )
