"""Kafka plumbing: every client built in one place (``clients``), how they connect
(``security``: TLS and SASL, ``secret``: passwords that never print, ``access``: the login
checked before clients start) and topic creation (``topics``)."""
