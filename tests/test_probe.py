"""Few-shot ridge probe, k-NN and calibration error on data with known answers."""

from __future__ import annotations

import torch

from vitlab.evaluation.metrics import ClassificationMeter
from vitlab.evaluation.probe import few_shot_accuracy, knn_accuracy, ridge_fit


def _clusters(n_per: int, classes: int, dim: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 5
    y = torch.arange(classes).repeat_interleave(n_per)
    return centres[y] + spread * torch.randn(len(y), dim, generator=gen), y


def test_ridge_matches_lstsq() -> None:
    x, y = _clusters(20, 4, 8, 1.0, 0)
    w, b = ridge_fit(x, y, 4, l2=1e-9)
    t = torch.full((len(y), 4), -1.0, dtype=torch.float64)
    t[torch.arange(len(y)), y] = 1.0
    xa = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    ref = torch.linalg.lstsq(xa, t).solution
    assert torch.allclose(w, ref[:-1], atol=1e-6) and torch.allclose(b, ref[-1], atol=1e-6)
    # The dual form (fewer samples than features) gives the same solution as the primal.
    xs, ys = x[:6], y[:6]
    w1, b1 = ridge_fit(xs, ys, 4, l2=0.5)
    xc = xs.double() - xs.double().mean(0)
    t = torch.full((6, 4), -1.0, dtype=torch.float64)
    t[torch.arange(6), ys] = 1.0
    w2 = torch.linalg.solve(xc.T @ xc + 0.5 * torch.eye(8, dtype=torch.float64), xc.T @ (t - t.mean(0)))
    assert torch.allclose(w1, w2, atol=1e-8)


def test_probes_separable_and_random() -> None:
    tr_x, tr_y = _clusters(30, 5, 16, 0.5, 1)
    te_x, te_y = _clusters(20, 5, 16, 0.5, 2)
    assert few_shot_accuracy(tr_x, tr_y, te_x, te_y, 5, shots=(1, 5))[5] == 100.0
    assert knn_accuracy(tr_x, tr_y, te_x, te_y, 5, k=5) == 100.0
    noise_y = tr_y[torch.randperm(len(tr_y), generator=torch.Generator().manual_seed(3))]
    noise_x = torch.randn_like(tr_x)
    assert knn_accuracy(noise_x, noise_y, te_x, te_y, 5, k=5) < 60.0


def test_ece_perfect_and_overconfident() -> None:
    m = ClassificationMeter(num_classes=2)
    logits = torch.tensor([[20.0, -20.0]] * 10)
    m.update(logits, torch.zeros(10, dtype=torch.long))
    assert m.result()["ece"] < 1e-6  # confident and right
    m = ClassificationMeter(num_classes=2)
    m.update(logits, torch.tensor([0] * 5 + [1] * 5))
    assert abs(m.result()["ece"] - 50.0) < 1e-6  # confidence 1.0, accuracy 0.5
