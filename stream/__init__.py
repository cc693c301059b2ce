"""streamgnn stream side: events, the decayed graph store, Kafka ingest."""
