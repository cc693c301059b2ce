"""The local Kafka node ``streamgnn demo`` runs on (and the test suite, through the same code).

``jars``: Kafka's jars resolved with Maven from the packaged ``pom.xml``; ``broker``:
:class:`~stream.local_broker.broker.LocalKafkaBroker`, one KRaft node on 127.0.0.1.
"""
