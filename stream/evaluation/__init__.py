"""Prequential ("test, then train") evaluation of the live pipeline; ``streamgnn eval``."""
