"""Export: ONNX (dynamic batch and size, metadata, checked with onnxruntime), torch.export, ``vitlab export``; timm hybrids via the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vitlab
from vitlab.cli.main import main
from vitlab.weights.vitlab_format import save_weights
from vitlab.weights import export_weights, import_weights
from vitlab.weights.errors import MappingError


def _tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = vitlab.create_model("vit_pico_patch4_32", depth=1, embed_dim=32, num_heads=2, mlp_dim=64, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_onnx_dynamic_batch_and_size_with_metadata(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """One export (tracing costs ~20 s on 2 cores): dynamic batch and image size, metadata read by onnxruntime."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import copy

    import onnx
    import onnxruntime as ort

    model = _tiny(crop_pct=0.9, interpolation="bicubic")
    names = [f"class{i}" for i in range(10)]
    save_weights(tmp_path / "m.safetensors", model, names)
    assert main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "m.onnx"), "--format", "onnx",
                 "--dynamic-size"]) == 0
    out = capsys.readouterr().out
    diff = float(out.split("difference ")[1].split(" ")[0])
    assert diff <= 1e-5 and "and sizes 40x36, 28x44" in out, out
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert graph.input[0].name == "images" and all(dims[i].dim_param and not dims[i].dim_value for i in (0, 2, 3))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
    assert meta["class_names"] == names and meta["vitlab_config"]["depth"] == 1
    assert meta["preprocessing"] == {"input_size": [3, 32, 32], "mean": list(model.config.mean), "std": list(model.config.std),
                                     "crop_pct": 0.9, "crop_mode": "vitlab", "interpolation": "bicubic"}
    # at a size it was not traced at, against eager PyTorch moved to that size (independently of the export's check)
    x = torch.randn(2, 3, 48, 24, generator=torch.Generator().manual_seed(7))
    (got,) = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        eager = copy.deepcopy(model)
        eager.set_input_size((48, 24), method="bicubic", antialias=False)
        assert (torch.from_numpy(got) - eager(x)).abs().max().item() <= 1e-5
        aa = copy.deepcopy(model)
        aa.set_input_size((48, 24), method="bicubic", antialias=True)  # another resampling: the check sees it
        assert (torch.from_numpy(got) - aa(x)).abs().max().item() > 1e-4
    # a stem whose token count is not all that changes with the size is refused in one line
    save_weights(tmp_path / "c.safetensors", vitlab.create_model("vit_pico_convstem_patch4_28"), [str(i) for i in range(10)])
    assert main(["export", str(tmp_path / "c.safetensors"), str(tmp_path / "c.onnx"), "--format", "onnx",
                 "--dynamic-size"]) == 4
    assert "--dynamic-size: stem 'conv'" in capsys.readouterr().err and not (tmp_path / "c.onnx").exists()


def test_torch_export_program_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    save_weights(tmp_path / "m.safetensors", _tiny(), [str(i) for i in range(10)])
    assert main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "m.pt2"), "--format", "torch-export"]) == 0
    assert "max abs logit difference 0.000e+00" in capsys.readouterr().out
    prog = torch.export.load(str(tmp_path / "m.pt2")).module()
    assert prog(torch.randn(7, 3, 32, 32)).shape == (7, 10)


def test_cli_export_layouts(tmp_path: Path) -> None:
    save_weights(tmp_path / "m.safetensors", _tiny(), [f"c{i}" for i in range(10)])
    for fmt, name in [("timm", "t.safetensors"), ("hf", "hf"), ("torchvision", "tv.pth")]:
        assert main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / name), "--format", fmt]) == 0
    # MindSpore files always compute eps 1e-7 and tanh GELU: a model with PyTorch's numerics is refused ...
    assert main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "m.ckpt"), "--format", "mindspore"]) == 4
    assert not (tmp_path / "m.ckpt").exists()
    # ... and one with MindSpore's is written
    save_weights(tmp_path / "ms.safetensors", _tiny(norm_eps=1e-7, act="gelu_tanh"), [f"c{i}" for i in range(10)])
    assert main(["export", str(tmp_path / "ms.safetensors"), str(tmp_path / "m.ckpt"), "--format", "mindspore"]) == 0
    imp = import_weights(tmp_path / "hf", "hf")
    assert imp.class_names == [f"c{i}" for i in range(10)]


def test_exports_refuse_what_the_target_cannot_express(tmp_path: Path) -> None:
    model = _tiny(global_pool="avg", class_token=False)
    with pytest.raises(MappingError, match="export to hf"):
        export_weights(model, tmp_path / "hf", "hf")
    with pytest.raises(MappingError, match="export to torchvision"):
        export_weights(model, tmp_path / "tv.pth", "torchvision")


def test_timm_hybrid_through_the_api(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    from safetensors.torch import load_file

    from vitlab.weights.io import write_safetensors

    torch.manual_seed(0)
    peer = timm.create_model("vit_small_r26_s32_224", pretrained=False, num_classes=4, depth=1, img_size=(64, 96)).eval()
    with torch.no_grad():
        for p in peer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    write_safetensors(tmp_path / "h.safetensors", peer.state_dict())
    imp = import_weights(tmp_path / "h.safetensors", "timm", img_size=(64, 96), num_heads=6, global_pool="token")
    assert imp.model.config.stem == "resnetv2"
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = peer(x)
        assert (imp.model(x) - ref).abs().max().item() <= 1e-5
    export_weights(imp.model, tmp_path / "back.safetensors", "timm")
    peer2 = timm.create_model("vit_small_r26_s32_224", pretrained=False, num_classes=4, depth=1, img_size=(64, 96)).eval()
    peer2.load_state_dict(load_file(tmp_path / "back.safetensors"), strict=True)
    with torch.no_grad():
        assert torch.equal(peer2(x), ref)
