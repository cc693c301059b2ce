"""Who shares a consumer group: a training worker must be alone in its group, and one
``streamgnn train`` follows an ingest group (:class:`GroupLease`).

A training worker (``streamgnn worker``, training on) trains one model on the partitions it
is assigned and publishes it to the embedding topics. Two in one group each train on a
share and publish two unrelated embedding spaces under the same keys, their versions going
back and forth (by hand on 2026-12-06, a second worker joining a running one: 1,216 of
2,829 users' versions went down on the user topic, nothing logged). An ingest worker
(``streamgnn ingest``, ``worker --train false``) beside a training worker takes partitions
whose events that worker's model then never learns.

So each ingest consumer says what it is in its ``client.id`` (:data:`TRAINING_CLIENT_ID`,
:data:`INGEST_CLIENT_ID`) and reads the group's members (the admin API's
``DescribeGroups``): before it joins (:func:`refuse_a_shared_group`, waiting a session
timeout for a member that may be its own previous run) and on every assignment, for two
that joined at once (:func:`must_leave`: the member whose id sorts first stays, so exactly
one side of each conflict leaves).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from confluent_kafka import KafkaException, TopicPartition

from stream.errors import GroupShared
from stream.kafka.access import not_authorized
from stream.kafka.clients import confluent_admin, confluent_consumer, rebalance_callback
from stream.kafka.failure import kafka_error
from stream.settings import KafkaSettings

if TYPE_CHECKING:  # built by stream.kafka.clients only
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

TRAINING_CLIENT_ID = "streamgnn-worker"
"""The ``client.id`` of a training worker's group consumer."""
TRAINER_CLIENT_ID = "streamgnn-train"
"""The ``client.id`` of ``streamgnn train``'s lease (:class:`GroupLease`)."""
INGEST_CLIENT_ID = "streamgnn-ingest"
"""The ``client.id`` of an ingest-only worker's group consumer."""

Role = Literal["worker", "ingest", "train"]
"""Who checks a group: a training worker, an ingest worker, ``streamgnn train``'s lease."""

_DESCRIBE_TIMEOUT_S = 10.0
_RECHECK_S = 1.0
LEFT_GRACE_S = 3.0  # beyond the session timeout: the coordinator's own check interval


def lingering_s(kafka: KafkaSettings) -> float:
    """How long a static member that stopped may still be listed in its group (the
    coordinator keeps it a session timeout): a worker's previous run, waited out."""
    return kafka.session_timeout_ms / 1000 + LEFT_GRACE_S


@dataclass(frozen=True)
class Member:
    """One member of a consumer group, as the coordinator describes it."""

    member_id: str
    client_id: str
    host: str
    instance_id: str | None = None
    assignment: frozenset[tuple[str, int]] = frozenset()  # (topic, partition) it owns

    @property
    def training(self) -> bool:
        return self.client_id == TRAINING_CLIENT_ID

    def __str__(self) -> str:
        instance = f", instance {self.instance_id}" if self.instance_id else ""
        return f"{self.client_id} at {self.host.lstrip('/')}{instance}"


def group_members(
    kafka: KafkaSettings, admin: AdminClient | None = None, timeout_s: float = _DESCRIBE_TIMEOUT_S
) -> list[Member]:
    """The members of ``kafka.group_id`` now (none for a group that is empty or new), asked
    through ``admin`` or a client made for the call. A rebalance callback passes the one its
    consumer keeps: a client made and dropped inside the callback held up the deliveries of
    the partitions the member kept, ~1 s in 4 of 5 joins by hand (2026-12-07; the test:
    tests/stream/kafka/test_cooperative_rebalance.py)."""
    if admin is None:
        admin = group_admin(kafka)
    future = admin.describe_consumer_groups([kafka.group_id], request_timeout=timeout_s)
    description = future[kafka.group_id].result(timeout=timeout_s)
    return [
        Member(
            m.member_id,
            m.client_id,
            m.host,
            m.group_instance_id,
            frozenset((tp.topic, tp.partition) for tp in m.assignment.topic_partitions or ()),
        )
        for m in description.members
    ]


def conflicts(
    members: Sequence[Member], training: bool, instance_id: str | None, own_id: str = ""
) -> list[Member]:
    """The members a worker may not share its group with: for a training worker every
    other one, for an ingest worker the training ones. A member with the worker's own
    id, or its own static instance id (its previous run), is itself."""
    others = [
        m
        for m in members
        if m.member_id != own_id and not (instance_id and m.instance_id == instance_id)
    ]
    return others if training else [m for m in others if m.training]


async def refuse_a_shared_group(
    kafka: KafkaSettings, role: Role, stopping: Callable[[], bool]
) -> bool:
    """Before joining: raise :class:`GroupShared` naming a member this worker may not
    share the group with, once it has stayed a session timeout (a member this worker's
    previous run left behind goes by then). True to go on; False when ``stopping()``
    turned true meanwhile. A group the coordinator cannot describe is not refused (the
    check on assignment still runs). A worker (not ``train``) also waits, up to the same
    session timeout, for its previous run to go when partitions were added to the topic
    since that run was assigned (:func:`unowned_by_a_former_self`)."""
    deadline = time.monotonic() + lingering_s(kafka)
    said = False
    admin: AdminClient | None = None  # one client for every check of the wait
    while not stopping():
        try:
            if admin is None:
                admin = group_admin(kafka)
            members = await asyncio.to_thread(group_members, kafka, admin)
        except (KafkaException, TimeoutError) as exc:
            error = kafka_error(exc) if isinstance(exc, KafkaException) else None
            refused = not_authorized(error, kafka, f"use group {kafka.group_id!r}")
            if refused is not None:  # READ implies DESCRIBE: joining would fail as well
                raise refused from None
            log.warning("could not describe group %s (%r); joining it", kafka.group_id, exc)
            return True
        found = conflicts(members, role != "ingest", kafka.instance_id)
        unowned = (
            []
            if found or role == "train"
            else await asyncio.to_thread(unowned_by_a_former_self, kafka, members, admin)
        )
        if not found and not unowned:
            return True
        if time.monotonic() >= deadline:
            if found:
                raise GroupShared(shared_message(kafka.group_id, role, found[0]))
            log.warning(
                "group %s still lists this worker's previous run; joining: partitions %s of "
                "%s may stay unread until the group rebalances",
                kafka.group_id,
                unowned,
                kafka.interactions_topic,
            )
            return True
        if not said:
            left = deadline - time.monotonic()
            if found:
                why = f"has {found[0]}; waiting up to {left:.0f} s for it to leave"
            else:  # joining now would be handed the previous run's assignment, as it was
                why = (
                    f"still lists this worker's previous run (instance {kafka.instance_id}), "
                    f"and partitions {unowned} of {kafka.interactions_topic} were added since "
                    "it was assigned; a static member that joins before its previous run "
                    f"has gone keeps that run's assignment: waiting up to {left:.0f} s for it"
                )
            log.warning("group %s %s", kafka.group_id, why)
            said = True
        await asyncio.sleep(_RECHECK_S)
    return False


def unowned_by_a_former_self(
    kafka: KafkaSettings, members: Sequence[Member], admin: AdminClient
) -> list[int]:
    """The interactions topic's partitions no member of the group owns, when one member is
    this worker's previous run (its static instance id, kept a session timeout after it
    stopped); otherwise none. Partitions added while the worker was down: the coordinator
    hands a static member that comes back in time its previous assignment, without a
    rebalance, so they would stay unread until another member joins or leaves (by hand on
    2026-12-08 with librdkafka 2.16: 90 s and counting). A topic that cannot be described
    now, or a group described with no assignment: none (joining as before)."""
    if not kafka.instance_id or all(m.instance_id != kafka.instance_id for m in members):
        return []
    topic = kafka.interactions_topic
    try:
        metadata = admin.list_topics(topic, timeout=_DESCRIBE_TIMEOUT_S).topics.get(topic)
    except KafkaException:
        return []
    if metadata is None or metadata.error is not None:
        return []
    return unowned(members, topic, metadata.partitions)


def unowned(members: Sequence[Member], topic: str, partitions: Iterable[int]) -> list[int]:
    """``partitions`` of ``topic`` that no member's assignment holds; none when no member
    holds any (a group that is not stable is described without its assignments)."""
    owned = {p for m in members for t, p in m.assignment if t == topic}
    return sorted(set(partitions) - owned) if owned else []


def must_leave(
    members: Sequence[Member], training: bool, instance_id: str | None, own_id: str
) -> Member | None:
    """On an assignment: the member that makes this worker leave the group, or None.

    Two that joined at once both passed :func:`refuse_a_shared_group`; of each conflicting
    pair the member whose id sorts first stays, and both sides decide alike."""
    rivals = [m for m in conflicts(members, training, instance_id, own_id) if m.member_id < own_id]
    return rivals[0] if rivals else None


def group_admin(kafka: KafkaSettings) -> AdminClient:
    """An admin client for :func:`group_members`; a consumer's callbacks keep one."""
    return confluent_admin(kafka, {"client.id": "streamgnn-group-check", "logger": log})


def leaving_for(kafka: KafkaSettings, role: Role, own_id: str, admin: AdminClient) -> str | None:
    """On an assignment: why this member must leave the group (:func:`must_leave`), or
    None; ``admin`` is the consumer's own (see :func:`group_members`). A group the
    coordinator cannot describe now is not left (the start checked)."""
    try:
        members = group_members(kafka, admin)
    except (KafkaException, TimeoutError) as exc:
        log.warning("could not describe group %s (%r)", kafka.group_id, exc)
        return None
    other = must_leave(members, role != "ingest", kafka.instance_id, own_id)
    return None if other is None else shared_message(kafka.group_id, role, other)


def shared_message(group: str, role: Role, other: Member) -> str:
    """Why ``role`` may not join ``group`` beside ``other``, and the way out."""
    why = {
        "worker": "a training worker trains one model on all of the group's partitions and "
        "must be alone in it. Scale out with `streamgnn ingest` workers and one `streamgnn "
        "train` (docs/scaling.md), or give this worker its own --group-id",
        "ingest": "an ingest worker cannot share a group with a training worker, which must "
        "be alone in it; give one of them its own --group-id",
        "train": "one `streamgnn train` follows an ingest group's changelog (two would "
        "publish two models under the same keys); stop the other first",
    }[role]
    return f"consumer group {group!r} already has {other}: {why}"


class GroupLease:
    """Membership of a group only one process may hold: ``streamgnn train``, one trainer
    per ingest group (two would each publish a model under the same keys), in the group
    ``<group>.trainer``.

    A consumer subscribed to ``topic`` that never fetches (its partitions paused), only so
    that the coordinator lists it: :meth:`acquire` refuses a group another trainer holds,
    as a worker's start does, and :meth:`poll`, called with the holder's own reads, raises
    :class:`GroupShared` when a rival that joined at the same moment sorts first.
    """

    def __init__(self, kafka: KafkaSettings, group_id: str) -> None:
        self._kafka = dataclasses.replace(kafka, group_id=group_id)
        self._consumer: Consumer | None = None
        self._admin: AdminClient | None = None

    def acquire(self, topic: str, stopping: Callable[[], bool]) -> bool:
        """Check the group, then join it; False when ``stopping()`` turned true first."""
        if not asyncio.run(refuse_a_shared_group(self._kafka, "train", stopping)):
            return False
        k = self._kafka
        config: dict[str, object] = {
            "group.id": k.group_id,
            "client.id": TRAINER_CLIENT_ID,
            "enable.auto.commit": False,
            "session.timeout.ms": k.session_timeout_ms,
            "logger": log,
        }
        if k.instance_id:
            config["group.instance.id"] = k.instance_id
        self._admin = group_admin(k)
        self._consumer = confluent_consumer(k, config)
        self._consumer.subscribe([topic], on_assign=self._assigned)
        self._consumer.poll(0)
        return True

    def poll(self) -> None:
        """Serve the membership (heartbeats run on their own; rebalances need this)."""
        if self._consumer is not None:
            self._consumer.poll(0)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._admin is not None  # made before the subscription
        with rebalance_callback(f"holding the lease of group {self._kafka.group_id}"):
            other = leaving_for(self._kafka, "train", consumer.memberid() or "", self._admin)
            if other is not None:
                raise GroupShared(other)
            consumer.assign(partitions)
            consumer.pause(partitions)  # a lease, not a reader
