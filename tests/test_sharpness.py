import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from robustprec.train.sharpness import logit_sharpness, sharpness_from_sums, sharpness_sums


def brute_force_max_ce(z: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    """Mean over positions of the max CE over all 2^V corners of each position's box (independent oracle)."""
    total = 0.0
    for zi, yi in zip(z, y, strict=True):
        radius = eps * (zi.abs() + 1)
        best = -math.inf
        for signs in itertools.product((-1.0, 1.0), repeat=zi.numel()):
            corner = zi + torch.tensor(signs, dtype=torch.float64) * radius
            best = max(best, F.cross_entropy(corner[None], yi[None]).item())
        total += best
    return total / len(z)


@pytest.mark.parametrize("seed", range(5))
def test_closed_form_equals_brute_force_over_corners(seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(12, 5, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 5, (12,), generator=g)
    eps = 0.05
    f = F.cross_entropy(z, y).item()
    expected = 100 * (brute_force_max_ce(z, y, eps) - f) / (1 + f)
    assert logit_sharpness(z, y, eps) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_random_points_in_box_never_exceed_closed_form():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 7, generator=g, dtype=torch.float64) * 4
    y = torch.randint(0, 7, (64,), generator=g)
    eps = 0.02
    f = F.cross_entropy(z, y).item()
    phi = logit_sharpness(z, y, eps)
    radius = eps * (z.abs() + 1)
    for _ in range(300):
        delta = (torch.rand(z.shape, generator=g, dtype=torch.float64) * 2 - 1) * radius
        phi_rand = 100 * (F.cross_entropy(z + delta, y).item() - f) / (1 + f)
        assert phi_rand <= phi + 1e-12


def test_hand_computed_value():
    # two classes, z = (0, 0), target 0, eps = 0.1: worst corner z' = (-0.1, +0.1)
    z, y = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([0])
    f = math.log(2)
    f_worst = math.log(1 + math.exp(0.2))
    assert logit_sharpness(z, y, 0.1) == pytest.approx(100 * (f_worst - f) / (1 + f))


def test_sums_reduce_like_the_whole():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(10, 3, 6, generator=g)
    y = torch.randint(0, 6, (10, 3), generator=g)
    a, b = sharpness_sums(z[:4], y[:4], 1e-3), sharpness_sums(z[4:], y[4:], 1e-3)
    base, worst, count = (a + b).tolist()
    merged = sharpness_from_sums(base, worst, int(count))
    assert merged == pytest.approx(logit_sharpness(z, y, 1e-3), rel=1e-9)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="do not match"):
        logit_sharpness(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long), 1e-3)
