"""Frozen-feature evaluation: few-shot linear probes by closed-form ridge regression, and k-NN.

The ViT paper (section 4.1) reports few-shot accuracy from "a regularized least-squares regression
problem that maps the (frozen) representation of a subset of training images to {-1, 1}^K target
vectors", solvable in closed form. k-NN follows the weighted cosine vote of Wu et al. 2018 / DINO.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from tqdm import tqdm


@torch.no_grad()
def extract_features(model: nn.Module, loader: Iterable, device: torch.device, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-logit features (N, F) float32 on CPU and labels (N,) for every sample of ``loader``."""
    model.eval()
    feats, labels = [], []
    for images, targets in tqdm(loader, desc="features", disable=not progress, leave=False):
        x = model.forward_head(model.forward_features(images.to(device)), pre_logits=True)
        feats.append(x.float().cpu())
        labels.append(targets.cpu())
    return torch.cat(feats), torch.cat(labels)


def ridge_fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ridge regression to {-1, 1} one-hot targets; returns (W (F, K), b (K,)) in float64."""
    x = x.double()
    mean = x.mean(0, keepdim=True)
    xc = x - mean
    t = torch.full((len(y), num_classes), -1.0, dtype=torch.float64)
    t[torch.arange(len(y)), y] = 1.0
    n, f = xc.shape
    if n < f:  # dual form: an n x n solve instead of f x f
        k = xc @ xc.T + l2 * torch.eye(n, dtype=torch.float64)
        w = xc.T @ torch.linalg.solve(k, t - t.mean(0))
    else:
        a = xc.T @ xc + l2 * torch.eye(f, dtype=torch.float64)
        w = torch.linalg.solve(a, xc.T @ (t - t.mean(0)))
    b = t.mean(0) - (mean @ w).squeeze(0)
    return w, b


def few_shot_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int,
    shots: Sequence[int] = (1, 5, 10, 25), seeds: int = 3, l2: float = 1.0,
) -> dict[int, float]:
    """Mean top-1 (percent) over ``seeds`` draws of ``n`` training examples per class, for each n."""
    out: dict[int, float] = {}
    for n in shots:
        accs = []
        for s in range(seeds):
            gen = torch.Generator().manual_seed(1000 * n + s)
            picks = []
            for c in range(num_classes):
                idx = torch.nonzero(train_y == c).flatten()
                if len(idx) == 0:
                    continue
                picks.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
            sel = torch.cat(picks)
            w, b = ridge_fit(train_x[sel], train_y[sel], num_classes, l2)
            pred = (test_x.double() @ w + b).argmax(1)
            accs.append(100.0 * float((pred == test_y).double().mean()))
        out[n] = sum(accs) / len(accs)
    return out


def knn_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int,
    k: int = 20, temperature: float = 0.07, chunk: int = 1024,
) -> float:
    """Weighted k-NN top-1 (percent): cosine neighbours vote with weight exp(similarity / T)."""
    tr = torch.nn.functional.normalize(train_x.float(), dim=1)
    te = torch.nn.functional.normalize(test_x.float(), dim=1)
    k = min(k, len(tr))
    correct = 0
    for start in range(0, len(te), chunk):
        sim = te[start:start + chunk] @ tr.T  # (c, N)
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(top), num_classes)
        votes.scatter_add_(1, train_y[idx], (top / temperature).exp())
        correct += int((votes.argmax(1) == test_y[start:start + chunk]).sum())
    return 100.0 * correct / len(te)
