"""Numerics travel on every path: source x target with non-default LayerNorm eps and activation.

Sources (each with its own ground truth, never vitlab's output): a vitlab checkpoint, a timm
.safetensors that states its numerics, a transformers folder (config.json: ``hidden_act``
gelu_pytorch_tanh, ``layer_norm_eps`` 1e-7), a MindSpore checkpoint (eps 1e-7, tanh GELU by
MindSpore's convention), all at eps 1e-7 / tanh GELU; a torchvision state dict (fixed eps 1e-6,
exact GELU) and a Google .npz (Flax: eps 1e-6, tanh GELU; the reference is numpy).
Targets: vitlab, timm, HF, torchvision, MindSpore (.npz is read-only). Each written file runs in
the target's library built from the target's own description: timm from the file's
``timm_kwargs`` + ``numerics`` metadata, transformers from config.json, torchvision and MindSpore
(no MindSpore here: a timm ViT with MindSpore's conventions) from their fixed numerics. Where a
target cannot express the numerics, export refuses in one line.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from vitlab.weights import export_weights, import_weights
from vitlab.weights.errors import MappingError
from vitlab.weights.mindspore_ckpt import read_ckpt, write_ckpt

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
torchvision = pytest.importorskip("torchvision")

from test_weights_npz import google_arrays, reference  # noqa: E402  (the npz tests' numpy reference)

IMG, PATCH, DIM, DEPTH, HEADS, MLP, CLASSES = 16, 4, 32, 2, 2, 64, 5
X = torch.randn(3, 3, IMG, IMG, generator=torch.Generator().manual_seed(0))
TOL = 1e-5
MS = (1e-7, "gelu_tanh")  # the non-default numerics every source that can express them uses
TARGETS = ("vitlab", "timm", "hf", "torchvision", "mindspore")
FIXED = {"torchvision": (1e-6, "gelu"), "mindspore": (1e-7, "gelu_tanh")}  # what those files always compute


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def _timm(eps: float, act: str, **kw) -> torch.nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    act_layer = {"gelu": torch.nn.GELU, "gelu_tanh": timm.layers.GELUTanh}[act]
    args = dict(img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, mlp_ratio=MLP / DIM,
                num_classes=CLASSES) | kw
    return VisionTransformer(**args, norm_layer=partial(torch.nn.LayerNorm, eps=eps), act_layer=act_layer)


def _to_mindcv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm names -> mindcv 0.3.0's (LayerNorm gamma / beta)."""
    out = {}
    for k, v in state.items():
        mod, _, leaf = k.rpartition(".")
        is_norm = mod.split(".")[-1] in ("norm1", "norm2", "norm", "fc_norm")
        out[f"{mod}.{ {'weight': 'gamma', 'bias': 'beta'}[leaf] }" if is_norm else k] = v
    return out


def _from_mindcv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.replace(".gamma", ".weight").replace(".beta", ".bias"): v for k, v in state.items()}


# ------------------------------------------------------------------ sources: (file, numerics, ground truth)
def _source(kind: str, tmp: Path):
    if kind in ("vitlab", "timm", "mindspore"):
        truth = _perturb(_timm(*MS), 1)
        state = {k: v.contiguous() for k, v in truth.state_dict().items()}
        if kind == "timm":  # the file describes itself: timm's kwargs and the numerics in its metadata
            from vitlab.weights.io import write_safetensors

            kwargs = dict(img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                          mlp_ratio=MLP / DIM, num_classes=CLASSES, global_pool="token")
            write_safetensors(tmp / "src.safetensors", state, {"format": "pt", "timm_kwargs": json.dumps(kwargs),
                                                               "numerics": json.dumps({"norm_eps": MS[0], "act": MS[1]})})
            return tmp / "src.safetensors", MS, truth
        if kind == "mindspore":
            write_ckpt(tmp / "src.ckpt", _to_mindcv(state))
            return tmp / "src.ckpt", MS, truth
        import vitlab
        from vitlab.weights.vitlab_format import save_weights

        ours = vitlab.create_model("vit_pico_patch4_32", img_size=IMG, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                                   mlp_dim=MLP, num_classes=CLASSES, norm_eps=MS[0], act=MS[1])
        ours.load_state_dict(state, strict=True)  # vitlab keeps timm's parameter names
        save_weights(tmp / "src.safetensors", ours, [str(i) for i in range(CLASSES)])
        return tmp / "src.safetensors", MS, truth
    if kind == "hf":
        cfg = transformers.ViTConfig(image_size=IMG, patch_size=PATCH, hidden_size=DIM, num_hidden_layers=DEPTH,
                                     num_attention_heads=HEADS, intermediate_size=MLP, num_labels=CLASSES,
                                     hidden_act="gelu_pytorch_tanh", layer_norm_eps=MS[0])
        torch.manual_seed(2)
        truth = _perturb(transformers.ViTForImageClassification(cfg), 2)
        truth.save_pretrained(tmp / "src_hf")
        return tmp / "src_hf", MS, lambda x: truth(pixel_values=x).logits
    if kind == "torchvision":
        truth = _perturb(_torchvision(), 3)
        torch.save(truth.state_dict(), tmp / "src.pth")
        return tmp / "src.pth", FIXED["torchvision"], truth
    w = google_arrays((IMG // PATCH,) * 2, CLASSES, big_vision=False, seed=4)  # npz
    np.savez(tmp / "src.npz", **w)
    return tmp / "src.npz", (1e-6, "gelu_tanh"), lambda x: torch.from_numpy(reference(w, x.numpy(), False))


def _torchvision() -> torch.nn.Module:
    return torchvision.models.VisionTransformer(image_size=IMG, patch_size=PATCH, num_layers=DEPTH, num_heads=HEADS,
                                                hidden_dim=DIM, mlp_dim=MLP, num_classes=CLASSES)


# ------------------------------------------------------------------ targets: the peer from the file's own description
def _peer(target: str, path: Path, use_numerics: bool = True):
    if target == "vitlab":
        from vitlab.weights.rebuild import load_checkpoint

        return load_checkpoint(path).model
    if target == "timm":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        numerics = json.loads(meta["numerics"])
        kwargs = json.loads(meta["timm_kwargs"])  # may name the activation itself (act_layer, a timm name)
        kwargs.setdefault("act_layer", {"gelu": torch.nn.GELU, "gelu_tanh": timm.layers.GELUTanh}[numerics["act"]])
        if not use_numerics:  # timm's defaults instead of what the file states
            kwargs.pop("act_layer")
            numerics["norm_eps"] = 1e-6
        model = timm.models.vision_transformer.VisionTransformer(
            **kwargs, norm_layer=partial(torch.nn.LayerNorm, eps=numerics["norm_eps"]))
        model.load_state_dict(load_file(path))
        return model.eval()
    if target == "hf":
        model = transformers.ViTForImageClassification.from_pretrained(path).eval()
        return lambda x: model(pixel_values=x).logits
    if target == "torchvision":
        model = _torchvision()
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    model = _timm(*FIXED["mindspore"])  # MindSpore's own conventions, mindcv's names
    model.load_state_dict(_from_mindcv(read_ckpt(path)))
    return model.eval()


_SUFFIX = {"vitlab": "out.safetensors", "timm": "out_timm.safetensors", "hf": "out_hf", "torchvision": "out.pth",
           "mindspore": "out.ckpt"}


@pytest.mark.parametrize("source", ["vitlab", "timm", "hf", "torchvision", "npz", "mindspore"])
def test_numerics_survive_every_conversion(source: str, tmp_path: Path) -> None:
    path, numerics, truth = _source(source, tmp_path)
    imp = import_weights(path, "torchvision" if source == "torchvision" else None, num_heads=HEADS)
    assert (imp.model.config.norm_eps, imp.model.config.act) == numerics
    with torch.no_grad():
        expect = truth(X)
        assert (imp.model(X) - expect).abs().max().item() <= TOL
        for target in TARGETS:
            out = tmp_path / _SUFFIX[target]
            if target in FIXED and FIXED[target] != numerics:
                with pytest.raises(MappingError, match=f"export to {target}: .*cannot record .*refusing to drop them"):
                    export_weights(imp.model, out, target)
                assert not out.exists()
                continue
            export_weights(imp.model, out, target)
            diff = (_peer(target, out)(X) - expect).abs().max().item()
            assert diff <= TOL, f"{source} -> {target}: {diff:.3e}"
        if numerics == MS:  # the control: a timm peer that ignored the file's numerics would be off
            assert (_peer("timm", tmp_path / _SUFFIX["timm"], use_numerics=False)(X) - expect).abs().max().item() > 10 * TOL


def test_timm_torch_files_cannot_record_numerics(tmp_path: Path) -> None:
    path, _, _ = _source("mindspore", tmp_path)
    imp = import_weights(path, num_heads=HEADS)
    with pytest.raises(MappingError, match=r"timm \.pth files .*write timm \.safetensors instead"):
        export_weights(imp.model, tmp_path / "t.pth", "timm")
