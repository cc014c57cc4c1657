"""Deployable graphs: ONNX (dynamic batch axis, checked with onnxruntime) and torch.export programs.

Both trace the model in eval mode on the fused-attention path. The ONNX file's input is
``images`` (N, C, H, W) with N dynamic; its output ``logits`` (N, classes). Verification runs the
exported graph and the model on the same random inputs at two batch sizes and reports the
largest absolute difference; it fails above ``tol``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vitlab.weights.errors import MappingError


def _example(model: nn.Module, batch: int, seed: int = 0) -> torch.Tensor:
    cfg = model.config
    return torch.randn(batch, cfg.in_chans, *cfg.img_size, generator=torch.Generator().manual_seed(seed))


def export_onnx(model: nn.Module, path: str | Path, opset: int = 18, verify: bool = True, tol: float = 1e-4) -> dict:
    """Write ``model`` as ONNX with a dynamic batch axis; returns {"max_abs_diff", "batches"} when verified."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        torch.onnx.export(model, (_example(model, 2),), str(path), input_names=["images"], output_names=["logits"],
                          opset_version=opset, dynamic_shapes=({0: batch},), dynamo=True, external_data=False,
                          verbose=False)
    return verify_onnx(model, path, tol) if verify else {}


@torch.no_grad()
def verify_onnx(model: nn.Module, path: str | Path, tol: float = 1e-4, batches: tuple[int, ...] = (1, 3)) -> dict:
    """Run the ONNX file with onnxruntime and the model on the same inputs; raise above ``tol``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in batches:
        x = _example(model, b, seed=b)
        (out,) = sess.run(["logits"], {"images": x.numpy()})
        worst = max(worst, (torch.from_numpy(out) - model(x)).abs().max().item())
    if worst > tol:
        raise MappingError(f"{path}: onnxruntime differs from the model by {worst:.3e} (> {tol})")
    return {"max_abs_diff": worst, "batches": list(batches)}


def export_program(model: nn.Module, path: str | Path, verify: bool = True, tol: float = 1e-5) -> dict:
    """Save a ``torch.export`` program (.pt2) with a dynamic batch axis; verified after reloading."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(model, (_example(model, 2),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    if not verify:
        return {}
    loaded = torch.export.load(str(path)).module()
    worst = 0.0
    with torch.no_grad():
        for b in (1, 3):
            x = _example(model, b, seed=b)
            worst = max(worst, (loaded(x) - model(x)).abs().max().item())
    if worst > tol:
        raise MappingError(f"{path}: the exported program differs from the model by {worst:.3e} (> {tol})")
    return {"max_abs_diff": worst, "batches": [1, 3]}
