"""The one exception hierarchy of streamgnn.

Every error the package raises on purpose derives from :class:`StreamGNNError`, so a
caller can tell ours from a library's. A bad *event* is not an exception: it is data
(a :class:`stream.events.Rejection`) routed to the dead-letter topic.

The model library raises its own :class:`models.errors.ModelError` s (``models`` imports
nothing of ``stream``); :func:`model_config_errors` turns its configuration errors into
:class:`ConfigError` where streamgnn builds models from its settings.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from models.errors import ModelConfigError


class StreamGNNError(Exception):
    """Base class of every error streamgnn raises on purpose."""


class ConfigError(StreamGNNError, ValueError):
    """A setting has a value outside its valid range; the message names it."""


class StoreError(StreamGNNError):
    """The graph store cannot be opened or is not a streamgnn store."""


class StoreReadError(StoreError):
    """A read of the graph store failed (a damaged table file, a failing disk): a restart
    meets it again, so the message says how to rebuild the store."""


class StoreWriteError(StoreError):
    """A write to the graph store failed (a full or failing disk): nothing of that batch is
    in the store, so a restart once the disk is fixed resumes after what it holds."""


class DeadLetterError(StreamGNNError):
    """A rejected record could not be written to the dead-letter topic (ingestion stops)."""


class ChangelogError(StreamGNNError):
    """The graph changelog cannot be written or restored (its transaction was aborted)."""


class ChangelogFenced(ChangelogError):
    """Another worker took this worker's transactional.id: this one must stop."""


class ChangelogTopicLost(ChangelogError):
    """The changelog topic was deleted (or replaced) under the worker."""


class BrokerError(StreamGNNError, RuntimeError):
    """The local Kafka node (or the jars it runs from) could not be provided."""


class BrokersUnreachable(StreamGNNError):
    """No Kafka bootstrap server answered while a command started (exit 1: a restart may
    find them up)."""


class RebalanceError(StreamGNNError):
    """A Kafka client call failed inside a rebalance callback (partitions could not be
    taken or given up); exit 1: a restart joins the group again."""


class GroupShared(StreamGNNError):
    """This worker may not share its consumer group with a member already in it (a training
    worker must be alone in its group; see :mod:`stream.kafka.group`)."""


class GroupLeft(StreamGNNError):
    """The consumer is no longer the group member its batch was read as (its session
    expired and it joined again): the batch's partitions may be another worker's now."""


class KafkaAccessError(StreamGNNError):
    """A Kafka broker refused this client: a failed login or TLS handshake (never retried)."""


class CheckpointDirInUse(ConfigError):
    """Another process holds the checkpoint directory: two trainers would load and
    overwrite each other's checkpoints."""


class CheckpointError(StreamGNNError):
    """A checkpoint file is torn, foreign or unreadable; the message says which and why."""


class SchemaError(StreamGNNError, ValueError):
    """An embedding record does not follow the wire schema (schema/embedding.v1.schema.json)."""


class PublishError(StreamGNNError):
    """Embedding records could not be published (not acked, or the topics are unusable)."""


class EmbeddingTopicGone(PublishError):
    """An embedding topic the publisher writes to no longer exists (deleted under it)."""


class PublishStopped(PublishError):
    """Publishing cannot go on in this process: never retried (a retry would meet the
    same); the command ends saying why."""


class EmbeddingRecordsRefused(PublishStopped):
    """The brokers refused embedding records for good (invalid, against a topic's rules)."""


class EmbeddingRecordTooLarge(EmbeddingRecordsRefused):
    """A vector record is larger than its embedding topic accepts (``max.message.bytes``)."""


class VersionLedgerUnwritable(PublishStopped):
    """The version ledger could not be written (its disk full or failing): no vector may be
    published before its version is reserved there."""


class PublishInterrupted(PublishError):
    """A publish gave up because the process is stopping; nothing it sent counts as acked."""


class VersionRegressionError(PublishError, ValueError):
    """A publish asked for a model version below one that may already be on the topics."""


@contextmanager
def model_config_errors() -> Iterator[None]:
    """Raise the model library's configuration errors as :class:`ConfigError`.

    ``models`` has its own exceptions (:mod:`models.errors`); this is the boundary where
    streamgnn builds models from its settings, so a caller catches one hierarchy.

    >>> with model_config_errors():
    ...     raise ModelConfigError("dim must be > 0, got 0")
    Traceback (most recent call last):
    ...
    stream.errors.ConfigError: dim must be > 0, got 0
    """
    try:
        yield
    except ModelConfigError as exc:
        raise ConfigError(str(exc)) from exc
