"""The step budget the trainer's unit tests were written against.

The product's defaults are the live worker's (one pass and one optimiser step per
micro-batch, at most 500 drift reports, a 0.05 publish threshold); these tests check
learning and reporting on tiny streams, where they need every pass and every report.
"""

UNCAPPED: dict[str, object] = {
    "steps_per_batch": 2,
    "max_steps_per_batch": 0,
    "max_drift_reports": 0,
    "publish_threshold": 1e-3,
}
