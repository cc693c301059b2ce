"""Durable state: the time-decayed graph store in RocksDB."""
