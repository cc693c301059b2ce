"""The score prior: folded vectors' dot product is the model's score."""

from __future__ import annotations

import torch

from models.prior import ScorePrior, TrendTable, fold


def test_folded_dot_product_is_cosine_plus_prior() -> None:
    g = torch.Generator().manual_seed(0)
    users = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    items = torch.nn.functional.normalize(torch.randn(7, 8, generator=g), dim=1)
    prior = torch.randn(7, generator=g)
    fu, fi = fold(users, items, prior)
    assert fu.shape == (5, 9) and fi.shape == (7, 9)
    assert torch.allclose(fu @ fi.T, users @ items.T + prior[None, :], atol=1e-6)
    assert torch.equal(fu[:, :8], users) and torch.equal(fi[:, :8], items)


def test_prior_is_the_mix_of_features() -> None:
    prior = ScorePrior(num_features=3)
    with torch.no_grad():
        prior.mix.copy_(torch.tensor([0.5, -1.0, 2.0]))
    features = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    assert prior.item_prior(features).tolist() == [0.5, 1.0]
    prior.reset_parameters()
    assert prior.item_prior(features).tolist() == [0.0, 0.0]


def test_each_item_is_read_at_its_own_moment() -> None:
    table = TrendTable(torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2))
    got = table.at(torch.tensor([1, 0, 1]), torch.tensor([2, 0, 0]))
    assert got.tolist() == [[10.0, 11.0], [0.0, 1.0], [6.0, 7.0]]
