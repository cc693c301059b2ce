"""Ingestion: the interactions topic into the graph store, exactly once, whatever it holds.

- :mod:`stream.ingest.source`: the consumer (librdkafka), positioned by the store's offsets.
- :mod:`stream.ingest.dead_letter`: rejected records to the DLQ, in letters that always fit.
- :mod:`stream.ingest.worker`: the loop that validates, dead-letters and applies a batch.
"""

from stream.ingest.worker import AppliedBatch, IngestTotals, IngestWorker

__all__ = ["AppliedBatch", "IngestTotals", "IngestWorker"]
