"""BPR and InfoNCE: values derivable by hand, monotone in the positive score."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import bpr_loss, in_batch_scores, info_nce, info_nce_loss, negative_scores


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def towards(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Unit vectors moved a fraction ``t`` of the way from ``b`` to ``a``."""
    return F.normalize((1 - t) * b + t * a, dim=-1)


def test_equal_scores_give_log2_and_log_1_plus_n() -> None:
    u = unit(1, 8).expand(5, 8)
    for n in (1, 3, 7):
        neg = u[:, None].expand(5, n, 8)
        assert bpr_loss(u, u, neg).item() == pytest.approx(math.log(2))
        assert info_nce_loss(u, u, neg, 0.3).item() == pytest.approx(math.log(1 + n))
    assert info_nce_loss(u, u, None, 0.3).item() == pytest.approx(math.log(5))  # in-batch


def test_losses_fall_as_the_positive_score_rises() -> None:
    user, pos, neg = unit(16, 8, seed=1), unit(16, 8, seed=2), unit(16, 4, 8, seed=3)
    bpr, nce, nce_in = [], [], []
    for t in (0.0, 0.3, 0.6, 0.9, 1.0):
        p = towards(user, pos, t)
        bpr.append(bpr_loss(user, p, neg).item())
        nce.append(info_nce_loss(user, p, neg, 0.2).item())
        nce_in.append(info_nce_loss(user, p, None, 0.2).item())
    for values in (bpr, nce):
        assert all(a > b for a, b in itertools.pairwise(values)), values
    assert nce_in[-1] < nce_in[0]
    assert min(bpr + nce + nce_in) >= 0


def test_two_dimensional_negatives_mean_one_per_row() -> None:
    user, pos, neg = unit(6, 4, seed=4), unit(6, 4, seed=5), unit(6, 4, seed=6)
    assert torch.allclose(bpr_loss(user, pos, neg), bpr_loss(user, pos, neg[:, None]))
    assert torch.allclose(
        info_nce_loss(user, pos, neg, 0.5), info_nce_loss(user, pos, neg[:, None], 0.5)
    )


def test_gradients_are_finite() -> None:
    user = unit(4, 8, seed=7).requires_grad_()
    loss = bpr_loss(user, unit(4, 8, seed=8), unit(4, 2, 8, seed=9)) + info_nce_loss(
        user, unit(4, 8, seed=8), None, 0.05
    )
    loss.backward()
    assert user.grad is not None and torch.isfinite(user.grad).all()


def test_validation() -> None:
    u = unit(3, 4)
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(u, u, None, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        bpr_loss(u, unit(2, 4), u)
    with pytest.raises(ValueError, match="do not fit"):
        bpr_loss(u, u, unit(3, 2, 5))


def test_info_nce_from_scores_with_a_log_q_offset() -> None:
    g = torch.Generator().manual_seed(3)
    pos, neg = torch.randn(5, generator=g), torch.randn(5, 7, generator=g)
    base = info_nce(pos, neg, 0.5)
    # a constant offset shifts every logit alike: the softmax does not move
    assert info_nce(pos, neg, 0.5, torch.full((5, 8), 3.0)).item() == pytest.approx(base.item())
    offset = torch.randn(5, 8, generator=g)
    logits = torch.cat([pos[:, None], neg], dim=1) / 0.5 + offset
    expected = -(logits.log_softmax(dim=1)[:, 0]).mean()
    assert info_nce(pos, neg, 0.5, offset).item() == pytest.approx(expected.item(), rel=1e-6)
    # in-batch: the row's own column is never its negative
    user = torch.nn.functional.normalize(torch.randn(4, 3, generator=g), dim=1)
    s_pos, s_neg = in_batch_scores(user, user)
    assert torch.isinf(s_neg.diagonal()).all() and torch.allclose(s_pos, torch.ones(4))
    # with the rows' items: a column of the row's own item is no negative either
    _, s_neg = in_batch_scores(user, user, torch.tensor([7, 3, 7, 5]))
    assert torch.isinf(s_neg).tolist() == [
        [True, False, True, False],
        [False, True, False, False],
        [True, False, True, False],
        [False, False, False, True],
    ]


@pytest.mark.parametrize("shape", [(4096, 64, 64), (513, 17, 64), (7, 5, 3), (1, 1, 1)])
def test_negative_scores_are_einsums_floats_and_gradients(shape: tuple[int, int, int]) -> None:
    """The CPU's own backward (the negatives' gradient in their layout) gives einsum's
    values and both gradients bit for bit, with a gradient of every size of batch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        b, n, d = shape
        gen = torch.Generator().manual_seed(b)
        user = torch.randn(b, d, generator=gen, requires_grad=True)
        rows = torch.randn(b * n, d, generator=gen, requires_grad=True)
        grad = torch.randn(b, n, generator=gen)
        expected = torch.einsum("bd,bnd->bn", user, rows.view(b, n, d))
        got = negative_scores(user, rows.view(b, n, d))
        assert torch.equal(got, expected)
        want = torch.autograd.grad(expected, (user, rows), grad)
        have = torch.autograd.grad(got, (user, rows), grad)
        assert torch.equal(have[0], want[0]) and torch.equal(have[1], want[1])
        assert have[1].is_contiguous()
    finally:
        torch.set_num_threads(threads)
