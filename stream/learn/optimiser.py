"""The trainer's Adam, carried across table growth with its moments."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def grown_adam(
    optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter], lr: float
) -> torch.optim.Adam:
    """A new Adam over the grown tables, keeping the moments (zero for new rows).

    Growing a table replaces its ``Parameter``, so the old optimiser no longer sees it; the
    moments of existing rows carry over, appended rows start from zero.
    """
    state = optimizer.state_dict()
    params = list(params)
    grown = torch.optim.Adam(params, lr=lr)
    if sum(len(g["params"]) for g in state["param_groups"]) != len(params):
        return grown  # the encoder's parameter set changed shape: start the moments afresh
    for index, moments in state["state"].items():
        shape = params[index].shape
        for key in ("exp_avg", "exp_avg_sq"):
            old = moments.get(key)
            if old is not None and old.shape != shape and old.shape[1:] == shape[1:]:
                moments[key] = torch.cat([old, old.new_zeros(shape[0] - old.shape[0], *shape[1:])])
    grown.load_state_dict(state)
    return grown
