"""The one exception hierarchy of streamgnn.

Every error the package raises on purpose derives from :class:`StreamGNNError`, so a
caller can tell ours from a library's. A bad *event* is not an exception: it is data
(a :class:`stream.events.Rejection`) routed to the dead-letter topic.
"""


class StreamGNNError(Exception):
    """Base class of every error streamgnn raises on purpose."""


class ConfigError(StreamGNNError, ValueError):
    """A setting has a value outside its valid range; the message names it."""


class StoreError(StreamGNNError):
    """The graph store cannot be opened or is not a streamgnn store."""


class DeadLetterError(StreamGNNError):
    """A rejected record could not be written to the dead-letter topic."""


class BrokerError(StreamGNNError, RuntimeError):
    """The local Kafka node (or the jars it runs from) could not be provided."""


class CheckpointError(StreamGNNError):
    """A checkpoint file is torn, foreign or unreadable; the message says which and why."""


class SchemaError(StreamGNNError, ValueError):
    """An embedding record does not follow the wire schema (schema/embedding.v1.schema.json)."""


class PublishError(StreamGNNError):
    """Embedding records could not be published (not acked, or the topics are unusable)."""


class PublishInterrupted(PublishError):
    """A publish gave up because the process is stopping; nothing it sent counts as acked."""


class VersionRegressionError(PublishError, ValueError):
    """A publish asked for a model version below one that may already be on the topics."""
