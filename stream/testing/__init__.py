"""Scenario drivers shared by the integration tests and the benchmarks."""
