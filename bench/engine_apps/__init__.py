"""The counting app of each stream engine bench/engines.py compares, run in that engine's own
virtual environment (var/engines/<name>, made by ``make bench-engines``): they import only
the engine and the standard library, never streamgnn."""
