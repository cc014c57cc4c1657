"""BatchNorm whose statistics span every process of a torchrun job, on the CPU as on CUDA.

With data parallelism each process normalises its own share of the batch, so BatchNorm layers
(conv stems, DeepViT's re-attention norm) make N processes differ from one process with the
global batch. ``torch.nn.SyncBatchNorm`` fixes that on GPUs but refuses CPU tensors, so on the
CPU (gloo) vitlab uses :class:`GlobalBatchNorm2d`: one all-reduce of (sum, sum of squares,
count) per layer, differentiable through :class:`_AllReduceSum` (the sum's gradient is the sum of
every process's gradient; torch's ``torch.distributed.nn.functional.all_reduce`` did the same but
is deprecated since torch 2.10 and warned in every torchrun job).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """y = sum over processes of x; dL/dx = sum over processes of dL/dy (every rank's loss counts)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        g = grad.clone(memory_format=torch.contiguous_format)  # one copy; the incoming grad stays untouched
        dist.all_reduce(g)
        return g


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with batch statistics over all processes while training (NCHW input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), xf.numel() / c, dtype=torch.float32, device=x.device)
        packed = _AllReduceSum.apply(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count]))
        n = packed[-1]
        mean = packed[:c] / n
        var = (packed[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
                self.num_batches_tracked.add_(1)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> tuple[nn.Module, int]:
    """Swap every ``nn.BatchNorm2d`` for a synchronised one (torch's on CUDA, ours elsewhere).

    Returns (model, number of layers converted). Parameters and buffers are kept (same keys), so
    checkpoints are unchanged.
    """
    if device.type == "cuda":
        n = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        return nn.SyncBatchNorm.convert_sync_batchnorm(model), n
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.BatchNorm2d:
                new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                        child.track_running_stats).to(device)
                new.load_state_dict(child.state_dict())
                new.train(child.training)
                setattr(module, name, new)
                count += 1
    return model, count
