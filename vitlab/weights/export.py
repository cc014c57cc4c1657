"""Deployable graphs: ONNX (dynamic batch axis, optionally free image size, checked with onnxruntime;
class names and preprocessing in its metadata) and torch.export programs.

Both trace the model in eval mode on the fused-attention path. The ONNX file's input is
``images`` (N, C, H, W) with N dynamic; its output ``logits`` (N, classes). Verification runs the
exported graph and the model on the same random inputs at two batch sizes and reports the
largest absolute difference; it fails above ``tol``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitlab.weights.errors import MappingError


def _example(model: nn.Module, batch: int, seed: int = 0) -> torch.Tensor:
    cfg = model.config
    return torch.randn(batch, cfg.in_chans, *cfg.img_size, generator=torch.Generator().manual_seed(seed))


def export_onnx(model: nn.Module, path: str | Path, opset: int = 18, verify: bool = True, tol: float = 1e-4,
                metadata: Mapping[str, Any] | None = None, dynamic_size: bool = False) -> dict:
    """Write ``model`` as ONNX with a dynamic batch axis (and, with ``dynamic_size``, free H and W).

    ``metadata`` (e.g. :func:`onnx_metadata`'s class names and preprocessing) is stored in the
    file's ``metadata_props``, one JSON string per key. Returns {"max_abs_diff", "batches"} (and
    "sizes") when verified.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    graph: nn.Module = model
    batch = torch.export.Dim("batch", min=1, max=4096)
    axes: dict[int, Any] = {0: batch}
    if dynamic_size:
        from vitlab.weights.onnx_dynamic import DynamicSizeViT

        graph = DynamicSizeViT(model).eval()
        p = model.config.patch_size
        axes.update({2: p * torch.export.Dim("grid_h", min=1, max=512), 3: p * torch.export.Dim("grid_w", min=1, max=512)})
    with torch.no_grad():
        torch.onnx.export(graph, (_example(model, 2),), str(path), input_names=["images"], output_names=["logits"],
                          opset_version=opset, dynamic_shapes=(axes,), dynamo=True, external_data=False,
                          verbose=False)
    if metadata:
        _write_metadata(path, metadata)
    if not verify:
        return {}
    result = verify_onnx(model, path, tol)
    if dynamic_size:
        result["sizes"] = verify_onnx_sizes(model, path, tol)
    return result


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


def onnx_metadata(model: nn.Module, class_names: list[str] | None = None) -> dict[str, Any]:
    """What an ONNX file should say about itself: class names, preprocessing, the vitlab config."""
    cfg = model.config
    pcfg = dict(getattr(model, "pretrained_cfg", None) or {})
    pre = {k: pcfg.get(k) for k in ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation")} if pcfg else {
        "input_size": [cfg.in_chans, *cfg.img_size], "mean": list(cfg.mean), "std": list(cfg.std),
        "crop_pct": cfg.crop_pct, "crop_mode": "center", "interpolation": cfg.interpolation}
    names = list(class_names if class_names is not None else getattr(model, "class_names", None) or [])
    return {"class_names": names, "preprocessing": pre, "model_name": getattr(model, "model_name", None),
            "vitlab_config": cfg.to_dict(), "pretrained_cfg": pcfg}


def _write_metadata(path: Path, metadata: Mapping[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=json.dumps(value, default=list))
    onnx.save(proto, str(path))


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON values of an ONNX file's metadata_props, read by onnxruntime (as a deployment would)."""
    import onnxruntime as ort

    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    return {k: json.loads(v) for k, v in meta.items()}


@torch.no_grad()
def verify_onnx_sizes(model: nn.Module, path: str | Path, tol: float = 1e-4) -> list[list[int]]:
    """Run a dynamic-size ONNX file at two other sizes against eager PyTorch at those sizes.

    The eager side is a copy of the model moved to each size with ``set_input_size`` (bicubic, no
    antialiasing: what the graph computes); raises above ``tol``.
    """
    import copy

    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    h, w = model.config.img_size
    p = model.config.patch_size
    sizes = [(h + 2 * p, w + p), (max(p, h - p), w + 3 * p)]
    for size in sizes:
        eager = copy.deepcopy(model).eval()
        eager.set_input_size(size, method="bicubic", antialias=False)
        x = torch.randn(2, model.config.in_chans, *size, generator=torch.Generator().manual_seed(sum(size)))
        (out,) = sess.run(["logits"], {"images": x.numpy()})
        diff = (torch.from_numpy(out) - eager(x)).abs().max().item()
        if diff > tol:
            raise MappingError(f"{path}: at {size[0]}x{size[1]} onnxruntime differs from the model by {diff:.3e} (> {tol})")
    return [list(s) for s in sizes]


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
