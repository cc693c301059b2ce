"""Kafka plumbing: every client built in one place (``clients``), topic creation (``topics``)."""
