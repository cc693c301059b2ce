"""Interaction producers: a synthetic shop-like stream or a file replay, paced into Kafka.

:class:`SyntheticStream` and :func:`replay_events` make event dicts; :func:`produce`
sends them (through an :class:`InteractionProducer`) at a target rate or as fast as
possible. ``streamgnn produce`` (:mod:`stream.produce.command`) is the thin command.
"""

from stream.produce.producer import (
    EventSink,
    InteractionProducer,
    ProduceReport,
    SendHook,
    encode_event,
    produce,
)
from stream.produce.replay import replay_events
from stream.produce.synthetic import (
    DEFAULT_MIX,
    Clock,
    SimulatedClock,
    SyntheticConfig,
    SyntheticStream,
    wall_clock_ms,
)

__all__ = [
    "DEFAULT_MIX",
    "Clock",
    "EventSink",
    "InteractionProducer",
    "ProduceReport",
    "SendHook",
    "SimulatedClock",
    "SyntheticConfig",
    "SyntheticStream",
    "encode_event",
    "produce",
    "replay_events",
    "wall_clock_ms",
]
