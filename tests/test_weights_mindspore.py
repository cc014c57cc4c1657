"""MindSpore .ckpt (mindcv 0.3.0 ViT): protobuf codec, validation, numerics, parity.

The reference model is timm's ViT configured with MindSpore's numerics (LayerNorm eps 1e-7,
tanh-approximate GELU), loaded from the mindcv-named tensors by a direct rename here; files are
also produced and parsed by Google's protobuf library (a dynamic message built from MindSpore's
schema) to check the hand-written codec against the real wire format.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from vitlab.cli.main import main
from vitlab.weights import export_weights, import_weights
from vitlab.weights.errors import MalformedFileError
from vitlab.weights.mindspore_ckpt import CRC_MARK, encode_record, read_ckpt, write_ckpt

TOL = 1e-5


def _mindcv_like(seed: int = 0, **kw) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A timm ViT with MindSpore numerics and its weights under mindcv's parameter names."""
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10) | kw
    ref = VisionTransformer(**args, norm_layer=partial(torch.nn.LayerNorm, eps=1e-7), act_layer=timm.layers.GELUTanh)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    names = {}
    for k, v in ref.state_dict().items():
        parts = k.rsplit(".", 1)
        is_norm = any(s in parts[0].split(".")[-1] for s in ("norm1", "norm2", "norm", "fc_norm"))
        names[f"{parts[0]}.{ {'weight': 'gamma', 'bias': 'beta'}[parts[1]] }" if is_norm and len(parts) == 2 else k] = v
    return ref.eval(), names


def _protobuf_classes():
    pb = pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="vitlab_ms_ckpt_test.proto", package="mstest", syntax="proto2")
    tp = fdp.message_type.add(name="TensorProto")
    tp.field.add(name="dims", number=1, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    tp.field.add(name="tensor_type", number=2, type=F.TYPE_STRING, label=F.LABEL_REQUIRED)
    tp.field.add(name="tensor_content", number=3, type=F.TYPE_BYTES, label=F.LABEL_REQUIRED)
    ck = fdp.message_type.add(name="Checkpoint")
    val = ck.nested_type.add(name="Value")
    val.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_REQUIRED)
    val.field.add(name="tensor", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_REQUIRED, type_name=".mstest.TensorProto")
    ck.field.add(name="value", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".mstest.Checkpoint.Value")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    assert pb
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("mstest.Checkpoint"))


def test_reader_parses_files_serialised_by_protobuf(tmp_path: Path) -> None:
    """MindSpore's own recipe: one Checkpoint message per slice, slices of the same tag concatenated."""
    Checkpoint = _protobuf_classes()
    w = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    blob = b""
    for rows in (w[:3], w[3:]):  # a tensor split into two records, as np.array_split does
        msg = Checkpoint()
        v = msg.value.add()
        v.tag, v.tensor.tensor_type, v.tensor.tensor_content = "w", "Float32", rows.numpy().tobytes()
        v.tensor.dims.extend([4, 6])
        blob += msg.SerializeToString()
    msg = Checkpoint()
    v = msg.value.add()
    v.tag, v.tensor.tensor_type, v.tensor.tensor_content = "global_step", "Int32", torch.tensor([7], dtype=torch.int32).numpy().tobytes()
    v.tensor.dims.extend([1])
    blob += msg.SerializeToString()
    (tmp_path / "a.ckpt").write_bytes(blob)
    got = read_ckpt(tmp_path / "a.ckpt")
    assert torch.equal(got["w"], w) and got["global_step"].tolist() == [7]


def test_writer_output_parses_with_protobuf(tmp_path: Path) -> None:
    Checkpoint = _protobuf_classes()
    tensors = {"a": torch.randn(5, 3), "b": torch.arange(4, dtype=torch.int64), "h": torch.randn(2, 2).half()}
    write_ckpt(tmp_path / "w.ckpt", tensors, slice_bytes=24)
    msg = Checkpoint()
    msg.ParseFromString((tmp_path / "w.ckpt").read_bytes())
    tags = [v.tag for v in msg.value]
    assert tags.count("a") == 3 and tags.count("b") == 2 and list(msg.value[0].tensor.dims) == [5, 3]
    assert {v.tensor.tensor_type for v in msg.value} == {"Float32", "Int64", "Float16"}
    back = read_ckpt(tmp_path / "w.ckpt")
    assert all(torch.equal(back[k], v) for k, v in tensors.items())


def test_crc_trailer_checked(tmp_path: Path) -> None:
    write_ckpt(tmp_path / "c.ckpt", {"a": torch.ones(3)}, crc_check=True)
    data = (tmp_path / "c.ckpt").read_bytes()
    assert data[-17:].startswith(CRC_MARK)
    assert torch.equal(read_ckpt(tmp_path / "c.ckpt")["a"], torch.ones(3))
    corrupt = bytearray(data)
    corrupt[-20] ^= 0xFF  # inside the tensor bytes
    (tmp_path / "bad.ckpt").write_bytes(bytes(corrupt))
    with pytest.raises(MalformedFileError, match="CRC-32"):
        read_ckpt(tmp_path / "bad.ckpt")


def test_byte_length_must_match_dims_and_type(tmp_path: Path) -> None:
    (tmp_path / "short.ckpt").write_bytes(encode_record("w", [2, 3], "Float32", b"\0" * 20))
    with pytest.raises(MalformedFileError, match=r"'w' has 20 bytes; dims \[2, 3\] Float32 need 24"):
        read_ckpt(tmp_path / "short.ckpt")
    (tmp_path / "type.ckpt").write_bytes(encode_record("w", [1], "Complex7", b"\0" * 4))
    with pytest.raises(MalformedFileError, match="unknown type"):
        read_ckpt(tmp_path / "type.ckpt")
    good = encode_record("w", [2, 3], "Float32", b"\0" * 24)
    (tmp_path / "torn.ckpt").write_bytes(good[:-7])
    with pytest.raises(MalformedFileError, match="truncated"):
        read_ckpt(tmp_path / "torn.ckpt")


def test_mindcv_checkpoint_matches_mindspore_numerics(tmp_path: Path) -> None:
    ref, names = _mindcv_like()
    train_state = {"moments.blocks.0.attn.qkv.weight": torch.zeros(192, 64), "global_step": torch.tensor([100], dtype=torch.int32),
                   "learning_rate": torch.tensor(0.001)}
    write_ckpt(tmp_path / "vit.ckpt", {**names, **train_state}, crc_check=True, slice_bytes=4096)
    imp = import_weights(tmp_path / "vit.ckpt", "mindspore", num_heads=2)
    cfg = imp.model.config
    assert (cfg.norm_eps, cfg.act, cfg.mean) == (1e-7, "gelu_tanh", (0.485, 0.456, 0.406))
    assert imp.info["ignored_keys"] == sorted(train_state)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expect = ref(x)
        out = imp.model(x)
        assert (out - expect).abs().max().item() <= TOL and torch.equal(out.argmax(-1), expect.argmax(-1))
        # PyTorch's defaults (eps 1e-6, exact GELU) would compute something else: the conventions matter.
        plain = import_weights(tmp_path / "vit.ckpt", "mindspore", num_heads=2, norm_eps=1e-6, act="gelu").model
        assert (plain(x) - expect).abs().max().item() > 10 * TOL
        # and the sabotage: q and k swapped
        for blk in imp.model.blocks:
            for p in (blk.attn.qkv.weight, blk.attn.qkv.bias):
                q, k, v = p.data.clone().chunk(3, 0)
                p.copy_(torch.cat([k, q, v], 0))
        assert (imp.model(x) - expect).abs().max().item() > 1e-3


def test_export_round_trip_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ref, names = _mindcv_like(img_size=48, global_pool="avg", class_token=False, fc_norm=True)
    write_ckpt(tmp_path / "vit.ckpt", names)
    imp = import_weights(tmp_path / "vit.ckpt", "mindspore", num_heads=2)
    export_weights(imp.model, tmp_path / "back.ckpt", "mindspore")
    back = read_ckpt(tmp_path / "back.ckpt")
    assert set(back) == set(names) and all(torch.equal(back[k], v) for k, v in names.items())
    assert main(["convert", str(tmp_path / "vit.ckpt"), str(tmp_path / "v.safetensors"), "--num-heads", "2"]) == 0
    assert "mindspore" in capsys.readouterr().out


def test_parity_with_mindcv_itself(tmp_path: Path) -> None:
    """Against mindcv's own ViT, saved by MindSpore itself. Runs only where mindspore and mindcv
    install (they need numpy < 2, so they are kept out of this project's environment)."""
    ms = pytest.importorskip("mindspore")
    pytest.importorskip("mindcv")
    import numpy as np
    from mindcv.models.vit import VisionTransformer as MsViT

    net = MsViT(image_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10)
    rng = np.random.default_rng(0)
    for p in net.get_parameters():
        p.set_data(ms.Tensor(p.asnumpy() + rng.standard_normal(p.shape).astype(np.float32) * 0.05))
    net.set_train(False)
    ms.save_checkpoint(net, str(tmp_path / "mindcv.ckpt"))
    imp = import_weights(tmp_path / "mindcv.ckpt", "mindspore", num_heads=2)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    expect = net(ms.Tensor(x)).asnumpy()
    with torch.no_grad():
        out = imp.model(torch.from_numpy(x)).numpy()
    assert np.abs(out - expect).max() <= TOL and (out.argmax(-1) == expect.argmax(-1)).all()
