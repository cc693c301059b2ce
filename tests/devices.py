"""The devices a device-parametrised test runs on: the CPU always, CUDA where present.

Without a GPU the CUDA case shows as skipped, so a run says what it did not cover.
"""

import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]
