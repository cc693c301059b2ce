"""Embedding topics: the wire schema, the publisher and the consumer library.

``schema``: the versioned record format (``schema/embedding.v1.schema.json``);
``ledger``: the durable model-version floor that keeps versions monotone across crashes;
``publisher``: :class:`~stream.publish.publisher.EmbeddingPublisher`;
``consumer``: :class:`~stream.publish.consumer.EmbeddingTable` and top-k;
``command``: the ``streamgnn consume`` sub-command.
"""
