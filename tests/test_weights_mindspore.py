"""MindSpore .ckpt (mindcv 0.3.0 ViT): protobuf codec, validation, numerics, parity.

The reference model is timm's ViT configured with MindSpore's numerics (LayerNorm eps 1e-7,
tanh-approximate GELU), loaded from the mindcv-named tensors by a direct rename here; files are
also produced and parsed by Google's protobuf library (a dynamic message built from MindSpore's
schema) to check the hand-written codec against the real wire format, and one checkpoint written by
MindSpore itself is embedded with the logits mindcv computed for it.
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
    assert main(["convert", str(tmp_path / "vit.ckpt"), str(tmp_path / "v.safetensors"), "--num-heads", "2", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "(mindspore) -> " in out and "verify: skipped, no peer library" in out  # no MindSpore here: said, not crashed


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


# A checkpoint written by MindSpore 2.10.0 itself (``mindspore.save_checkpoint(net, path, crc_check=True)``)
# from mindcv 0.3.0's ``VisionTransformer(image_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2,
# mlp_ratio=2.0, num_classes=3)`` with perturbed weights, and the logits mindcv computed for
# ``np.random.default_rng(1).standard_normal((2, 3, 8, 8))`` (float32). Recorded once in a separate
# environment, since MindSpore needs numpy < 2.
MINDSPORE_WRITTEN_CKPT = (
    "Cj4KCWNsc190b2tlbhIxCAEIAQgIEgdGbG9hdDMyGiDM9B49wJ2Oug7QYT5T4zc9TqQ/vl9l1T1PK8w+FwSIPgrAAQoJcG9zX2VtYmVkErIBCAEIBQgI"
    "EgdGbG9hdDMyGqABfh9QvuMXxb7cnVC+FK3cPLHlM79dXL69f4zVvs6hab6Nq0G+pGzivc1G9j30HKQ+OoXwvJkn4j5qKGa+VnThPRIrlD6A/oA5f2ln"
    "vjD1j76iQSS+jl0OPWXqqb5CikK9TrRdvUn2PT5bacY9DKDqPdGwVL749n6903RUPrmt5z60XsK+/k7aPoHS0j5twlk++POuPSJc8r2xVeI+MF8OPwqw"
    "DAoXcGF0Y2hfZW1iZWQucHJvai53ZWlnaHQSlAwICAgDCAQIBBIHRmxvYXQzMhqADC6yVj7j4xw/NYvAPgwTB7/ftbE+Bqf2PfbOPb5MQNm9hywRPrhZ"
    "fj0K9xW/CAfovpjH7b6ZS7a+YiVBP+R6Q75komW+RhU4PdxCkz6Y7RI/sIPHPs2DB7//So6+XJ+ivRQ1tT6FZz6+ZBv+Pk1lfr7mmwa/P4jePnSjPTvw"
    "4l8/f4qjPeZ14r7MtvM8iB9Avefl4b5osyq9WHnwvMb8iz7Kg/S+YgHRPlnTWz6edb8+3sAivppjJ77W9UC+aoHCPvg4iL6gleI7KiZqvpL/e76VmwW+"
    "xzFHPl8ofD5u9xe/rDUPP28O+75+wlO+R1UFPnLmar/omfI97Zgmvi0rlzzRMQq9yTUUvSnrID6AM649BHkPPwid4bw7XZ0+qrFRPgjB4T4Z2Kc+GxtF"
    "PF6ARr/voQA+0JSZvoLeOr67M5o98MyKPBFFy75gKRu8L7uIPt5urz6WZIY+orGoPGT2/z6sEbQ9rhMTP8C6Y786UO8+UBR+vlBJjTwggZs+t/YqPlbs"
    "W75R57U9iOEOv4CAvz0RENG+MC2/vHL3uL7Mdu69jOFTvYwR1r4NFcK9fLALvrokQz5AlHS+9IOCvcuKbL+sJzK+rX7Mvu7C6b6GKtC+WNluPk9sFj4v"
    "nYs+QJSjvrb/Vj8YO3G9rPnoPm7PrT2BYIw+GlGYPpGAxz3fin49VEvPvpjkYj2w3Su/5YmsPRKYgj1evg+/iMmZPXDdRL3Iz0O+V2ofvseuLr48wpg9"
    "jB8oPnR6er6oAg6/XAsqv0B7CD8m5Es+d7qnvvwe8T7V2+6+51OGvqVMnr4glpo9DB3pvtfMAD533we/HL2YPtYwqL0I+yE9vKSPPA6aE78BQ5O+N3+5"
    "PiGdiTzV/N8+QIhwu7gswj570LK+ZO6/va0La76acXK+E7eJvqvIUz+NOE4+y2M+v0DIerti5aa9JyE4vhlIwj6oDy0+goSBvqQLRz03f1S+WNRpvXUa"
    "ob6AQyI/T1HlPoT7N78YMgK9WkWrvsR3gL5qbJC/Xr8nv8d5Oj8w81a+rK4zPXTrBr7tmLo+QKAfvjzq4L5NFCc/biANPnT8n71MsDA+d3VzPlcv7j4m"
    "1RS/br0IP+Cak7xBLry92MfKu4BUhLoMjXc/tl3yPUAP2L2BnXy+n0QAvmn/Vz0qBrW9fHVPvWlOsb1khS2/n0vcvkcpiT/CYRQ/Lg0zvjfdQL4kKDG+"
    "jI2Mvs0DW76yYae+d3bIvit/KT+OZbM+kJSFvRo+n75Q2I6+Nl0wv4iH+LsG0SG/ZF1hvSQkMb6ASbk8lLwLv8bW1b68uHU9Kx7xPtDQrjzdPRi+7f9O"
    "vXr9gD5zqTa+LZitPtHHSD45+Lo+oFhLvGDXcL8kA5w+c95SvhnlZD5gJy285BlgPdpLd71Mp9y+b+I4vojD/T1pKq6+bKYOPx4ICz4s5Uq9xEglvh2j"
    "Br/qk4Q+Xm+EPur69L5ARYO7YIERvnC1zDyUNyg+eHhqPdxToL0rkrk8GeimvolTtj4mmBq/3NGkPa2IwL0+Wie9MUisvti+sT4gaO48bHL5PhicXL/X"
    "yRS/MmsFPkh3pD5RwQI+XSydvkuhdr5q84e+05SrPizysj6o1ZM+bKp2vmfqSz8Kv8O+nEEYv6L0oz5gEgi9iK3OPREDyj4duY4+UBiDPrh2FL8Qt/M+"
    "qscXPwIg4z2AiZ47Qqhcvj2wiD7AB7i8bZndvTaWCT9WVbc+eBLXvb7AyD4rJdI+kPnNvtDEX7xuZ5o9JleQPghKbT4mEIs+xsEGv50nGr80V82+lmhC"
    "vswcGT2SMzS+uaKXvizAHj3I0Rk9ODQZPmWC5z6VWxw+Ir1VPrF6LD6LNpg+U4wWPij8CD/wNRq/tXRfPZAC1z2+3jI+kNRdvcIuE78CZck+atIVv7od"
    "lj5CeAC/fD4BP683mb6aeUE+9VtGvlhj7T7l4Y09i8sVvzy99L61NQi+oIsevfuPrj64AAY9Rl4tPtLXJL8vapo+bgYqP7511L2OOjQ/ukJQvsDYt75k"
    "3aY9TaoAP2JtxL58ka8+tZrBvgpGChVwYXRjaF9lbWJlZC5wcm9qLmJpYXMSLQgIEgdGbG9hdDMyGiBqmZI+REInPilOPb1K+KU+fV7mvuaF0D6Igpy8"
    "2KImvgpFChRibG9ja3MuMC5ub3JtMS5nYW1tYRItCAgSB0Zsb2F0MzIaIK7EnD87s6g/Zo+dP+zHzD/4f6k/YkmxP9iJVj8sF4Q/CkQKE2Jsb2Nrcy4w"
    "Lm5vcm0xLmJldGESLQgIEgdGbG9hdDMyGiDA8iw+zmmuux9TuT0+5gI+Bq2BPsm2+byp6ta9ZnV+vgqtBgoYYmxvY2tzLjAuYXR0bi5xa3Yud2VpZ2h0"
    "EpAGCBgICBIHRmxvYXQzMhqABnBbkL4uzbs+A2mUvNXTYz5rRba+kN8Wv9CQpL44o68+ktKZPpH+ED5ajmW+i2KqvIUxrL29xRK+JEk7v+x+dr70C1+9"
    "ZGTePrhayDxd3+0+hnQgvhXLCL3dp5a/MhD0PZ/nJj6aBQQ/DD0RvtouAryqSEy+MaPEvkUihL6X6ry9aIvFPhEXIb2KvzW+YFM6PZ7upz0NWVa+IXiw"
    "PqV6Eb9qCWC9fK1EPqPmzb4GF7E9/RHWPn9xBz7wqAG/l4B4vgAxwj7nbcA9qmEOvLQT/j2KKmc+SPtFvs284L00Co09ijQqviTmcr2W5MI+/86XvgoU"
    "ED95HAA/ceEBv831k7wymvs95LFmvpFEbL4PCze9VaVNPqBWDb5uxw0/N2qFPax/BL1ZeNo+fmVLPhMf6z3JAaq9EMsMP7Njez4/FoW99873vmUf8z2X"
    "brO+ntgPvxcOf70uwBI9BubKPq5h8D2Dumw+jlCzvpgjwjzotEg9+f6JPuhcODy4EHk+RXQNvjxHEj7Wrus9no66vmbjkz0YXIO9besYvx46iD5Mn/i9"
    "PV+LvgCrs71qbC89ylffPtXdBr1unfg9SuncPsICND7iH54+4UAhvm8PcD74KjA7PlSRPkO9nb7MCUW+7n7IPnwNnr1AlvK9igV1PT60a742mt8+2lTR"
    "vrHexr2peQ0+MoQkvUaLZb62qWi+yOAUPkZumr6iAmI+Cqrbvq5eGL4bVRQ9B5LEvhbaMT4th9S8jhSTvsXJ5r7gfve+dLedO4jnq74CdMe+Si6/vVHM"
    "KD+fI489owqBPrSBqj2W2YA+D6bDvuRA8L2CAi89yQmou0d4dr0oj1W+wu2xvb79e77FkDa/AuCyvg7S9j2sNvk+vYYLP06CvTx87IU+j1SKPiojYr60"
    "gvu+Vp8HPHeiCL+QJ8G9eBw9PpKb1b7ECiY7P7SxPrih8T3c09s9XDiCPutN8D4Of7c9Ak7APnZgrLyNjxu+IZ/+Pfk0KL4WohG+miIdvqgML7/ub3c8"
    "xSfAvgqHAQoWYmxvY2tzLjAuYXR0bi5xa3YuYmlhcxJtCBgSB0Zsb2F0MzIaYPPPA70Zt94+Ig0gvlaBJr4af9E+PNMnPpz+lT58Stq9qc9lPn/KUr7x"
    "qk++jyo3PvzRN76oqGs+b643Pxx/Ab/DE2e+8Q2sPqZFMr3qV7I+WCWbvvCTyz3sADm90HwsPQquAgoZYmxvY2tzLjAuYXR0bi5wcm9qLndlaWdodBKQ"
    "AggICAgSB0Zsb2F0MzIagAIivtM9vMK/vqNdpL6QtMs+t12CPVnsbz3iGYm7ICMEPjxQqL5LTpq+mFXUPkf9Kj0XZoI+MUwTvojfwz74hJQ9xslIPpT5"
    "ID4SU22+s2kTv3yWnL7OpwE/ZBy/Pridqr0FbtK9bH66PtBKib1Cob6+UTC5Pp3TDD4WO0C/oAjzvRwhwDyzrfs9iGKmPezlK759Sie9Yn66PQIYx70Y"
    "i4C9TKfCPiSueL5lHOK9VT8fvx91Fz6HL3Y+NWlCPm91kT76hw4+PWISPnFyFj5AAoK9aKu9Pgfz8L2/oPS+AP9KPvxeCj/86pO+NGavvHyaW77QnAW+"
    "GWiBPVKxvL78o5G9CkgKF2Jsb2Nrcy4wLmF0dG4ucHJvai5iaWFzEi0ICBIHRmxvYXQzMhogMCzhvj6PLr4oLra+9quivtIWBL/6Srs+CWIcPuFCE78K"
    "RQoUYmxvY2tzLjAubm9ybTIuZ2FtbWESLQgIEgdGbG9hdDMyGiDkKVI/pIJMP3zvSj8c4RA/6vecPwCZYT8X+pE/ODqUPwpEChNibG9ja3MuMC5ub3Jt"
    "Mi5iZXRhEi0ICBIHRmxvYXQzMhogt0TTPthhC79QhgU/2ePCPr8LMD5UDzc/suB7PbtbfD4KrAQKF2Jsb2Nrcy4wLm1scC5mYzEud2VpZ2h0EpAECBAI"
    "CBIHRmxvYXQzMhqABNxGR77XUq0+YbbzPO4U5b1lDSc/K0nVvVf4Ej2ZdKu94kNfvpEaET4HiEg+dMqYPR8JLb/wY5g+btH8vZSFpL4elVw+9iczPqNh"
    "pr7P8UA/jlKivsQ+AL+Bhra+i3jVPuY0Fr2cowm+OrIzPBtzRb7UWWu+D4lKvt5lTD6Qrpw+FIKpvqEZiD3JQFI+wQqvvtz9Nb7eP5m+u0zEvjmIPz3l"
    "tnm+Wak3PjDbqroGBhE+rvaovQWLRL7If4C7AawoPLbhV7667cY9YXV+Pr4Zoz06oAU/h0xavmKtEj7qRCu+RCh/PRM3gb5rzqU+mQtAPcUgpD51Iry+"
    "oPArvplbiL5CkzS+jFFVvnEHLL382NY7Iltyvd5nK76ZcYw93JqMPrBAlb6Jp3k8bC+MvEpQKT5YyJO7KAtkvDuspr7oURs93u6XvjLIHT68hgy9AM8A"
    "PKJWhL40Rl0+4pBXPtqojT5VMjU/AgdOvTJZtD7EyMG8pbbrPTEP5j2GgOg9dg5jPu7v272RIP88J006Ps3zCD+mooS+WlgMv5e89b0GyzQ8i2edPXhD"
    "2Ts+kr4+VYSJPlqoCzwmpNm9Q2KovULbqb1Yoau9157pvprAB76WcPK9x/pPvT6lwr02bjE+KO0UvsLVML6BPDE+mVXHvTIxjj1eh2w+1uf7PYbaiT0c"
    "CiC8CmYKFWJsb2Nrcy4wLm1scC5mYzEuYmlhcxJNCBASB0Zsb2F0MzIaQFd6UT49t1c9PRcbvnhQOb3MGru+7LGTvnubEL/831C+ySPNPhD0Kr677nE+"
    "X6eHumc1V75Lj80+iNoyPs2JBr8KrAQKF2Jsb2Nrcy4wLm1scC5mYzIud2VpZ2h0EpAECAgIEBIHRmxvYXQzMhqABFenpD57/by+HYT0vNj9dz6rB7+9"
    "o6ClPpoXcD4YIvG+TCcRvl5RhT3y2j6+0uLzvPxUdD79GrU9R2+YvoHw7Dzn3Sa+j/K/vm5pub7ABLs9y18XvXNDqbz43qS+bLcavah8p76hoom+9Lxg"
    "vUigyr49zCQ+2+hCP/W0Ej49XZm+O3GHvVZB9r5CKLq91o4sPln5Kz5085q+da4/PR6erD7m2Qw/eo1IvleRab7kdp87kjlav0TGMb543Iy9KkT/vZA5"
    "4b6MRY+9EeqLvm83Wj5WhpG+xTuMvafpIr3KPzY+W/RMv9Y9rb1PVWI+GfamvY7q1L4mm+I9393dPdm7gb10HKu+tv13vh5otL290W6+bC8Mv3XAOb7i"
    "7Fu8HEAovoijLb1IIj27v7KLPkF0LT/9SX0+6LLVvl/sTL9eZjG9abXmPEOBt76KA6E9UitXvvPu7z0WCwy+kdP+PS3mBL8SvgG+70kxvezs1b7Hpw8/"
    "5YMlviN22T5IkCi+WUe6vfV2wT5tF749mOG1PFRzhj31adW+HzqnvYc9mL4swb49xFwrvjZiyLzrncC8IOxTvISGK7yz90a+Gp+Wvlm5VL46kbQ+kIiv"
    "Pcq0Fz4HweE+HWWsvmi46j1cUJW+xHAFvqsyHz4tivA+MhBevkS6Lb0vpqw+e0/cvkqAFT6Yo9C9CkYKFWJsb2Nrcy4wLm1scC5mYzIuYmlhcxItCAgS"
    "B0Zsb2F0MzIaIKlth74SLjQ94MI2PjkZjL46d+k9fAlVPRa+vr6vmu4+CjsKCm5vcm0uZ2FtbWESLQgIEgdGbG9hdDMyGiAu2qk/JvU9P17yUj8UmZ0/"
    "E/NZP1Jr5T7uRqg/U1aAPwo6Cglub3JtLmJldGESLQgIEgdGbG9hdDMyGiCpdRI/uKDbPQuxaj37wlw/yzBTvewykr660Yw9tHOuPgp+CgtoZWFkLndl"
    "aWdodBJvCAMICBIHRmxvYXQzMhpguaioviVJi75E2jE+LV1qvyLZqL4dg1A+Sjc2voYy/b64vhA/zabWvjNnF74mUqa90AsRPVklz71gmty8YvFyvFuz"
    "ebzNA+Y8j4Y3vxML4D29vN6+AvklvzaSxj4rQ7m+CiYKCWhlYWQuYmlhcxIZCAMSB0Zsb2F0MzIaDO4FXT22VG2+wWxQvmNyY19udW0AAAAAAADZMbSY"
)
MINDCV_LOGITS = [[-1.8071699142456055, -1.3323031663894653, 0.3605729937553406], [-1.3437312841415405, -1.0860042572021484, -0.49312955141067505]]


def test_checkpoint_written_by_mindspore_matches_mindcv_logits(tmp_path: Path) -> None:
    import base64

    import numpy as np

    path = tmp_path / "mindcv_tiny.ckpt"
    path.write_bytes(base64.b64decode("".join(MINDSPORE_WRITTEN_CKPT)))
    assert path.read_bytes()[-17:].startswith(CRC_MARK)  # MindSpore's own CRC trailer
    imp = import_weights(path, "mindspore", num_heads=2)
    assert (imp.model.config.norm_eps, imp.model.config.act, imp.model.config.mlp_dim) == (1e-7, "gelu_tanh", 16)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        out = imp.model(torch.from_numpy(x)).double()
    expect = torch.tensor(MINDCV_LOGITS, dtype=torch.float64)
    assert (out - expect).abs().max().item() <= TOL and torch.equal(out.argmax(-1), expect.argmax(-1))


# The older layout (mindcv <= 0.2 / mindvision, as in the MindSpore ViT tutorial's vit_b_16_224.ckpt):
# written by MindSpore 2.10.0 from mindcv 0.2.2's ``vit(image_size=8, input_channels=3, patch_size=4,
# embed_dim=8, num_layers=1, num_heads=2, num_classes=3, mlp_dim=16, representation_size=6)``
# (BaseClassifier: ``backbone.transformer.layers.0.0.cell.1.qkv.weight`` ..., a tanh pre-logits layer
# ``head.classifier.0`` and the classifier ``head.classifier.1``), perturbed weights, same inputs.
LEGACY_WRITTEN_CKPT = (
    "CkcKEmJhY2tib25lLmNsc190b2tlbhIxCAEIAQgIEgdGbG9hdDMyGiCa0RY/agncv/j4xz/MuQk/T+AyP6/AwD+uP/E/7uXAPgrNAQoWYmFja2JvbmUu"
    "cG9zX2VtYmVkZGluZxKyAQgBCAUICBIHRmxvYXQzMhqgASyQ1b5fzi6/EJ8dP6nM6T6JE4g+C0UsvoOSjj8K8AY+3LgLvyi5kj+yJSQ/DSBRPyj6Eb/0"
    "yHe/2F1avU5dKsAWeI++JPrEP7G6A78x7Ks+VpyHv/Rurr9YTMk+Q0cevwi+Jb9/bkk/ZRuFvx2BGsCgPpm+NknAPuuV6j+gmhFA3iz/PmrbKUDC0Sy+"
    "Iukhvz+2gj+h5pI/D1d1Pxyl170KvQwKJGJhY2tib25lLnBhdGNoX2VtYmVkZGluZy5jb252LndlaWdodBKUDAgICAMIBAgEEgdGbG9hdDMyGoAM6rJt"
    "Pqo+kT0jMI0+smhbvtLXoD4OWwy+OpkTvZBvg7woVuc8UJ0JvVjdSr2GDQC/f2mkPhBcsz5avbS9TCfAvszyfb7IMIM+rbyOPlh/FDzGZso+Epy1vreq"
    "F75hsMc9LLDEPW5qiL06IzK/+k2HPqH6FD2dlAW/BSiSPsVhxr1oJlC9HRugPnYQOr70B2Q+R6UnPigtvD0MgbE+BKsNPvQlq70hlRc//HTJvsRXNb2V"
    "WU2+c7ZfPfRqmz6cVPs+wn4LPTjQgb02E/u99RJdvqzfYT7D9Cy+KA6sPvGIyb2iaVM9mwEOP3i10r2rjgA/1CfzvsR5PL7DLRi/m1gEvhqhTj4imx4+"
    "2glbPjx5VT6yHJW+s7QGv4bhJz1Fgos+bBphvnIFor4S3/m+bvShvp2k/D6NVze+phnUvkaoGb6j00a++r0UPnHTML7cXSO+XpMnvmKAXj2qE4E+g5fQ"
    "PVB2EL6V1/W+dDzbvTiKqj3Oqoq+psk7PSBslr4cco6+aDyNPntyAT5+JPw+HKVdvkzbjT6+j7k+TsRnv5CxN73xTO8+xwg2PjhRur2IMZu8ycf/vmJy"
    "xT26Tu6+Jk66vhoTkz5s1KC7TcILvtw/NT3frGo/+2KEPnDOJr6ORgE/mqG0vapPoj4nlKC+Xt5LvlNEkD5fSSK+UkWAvl7qvj7L292+QogAv0c9kj4a"
    "bwe/flKzvj9Qgb4OBc2+MxrGvlt0ez6amUs9T39evj4I2T2bFsE+QLOzvmI4571N2A8/0/AlPqz3tz5uVAq+bmvzvZs2hD6GGlQ+3j6CPfW3Zb7SLwG/"
    "XkdAvfoEgr1RdSa9DNpxPcvAIj7USiA+bm9PPzJi6T7XWkO+FECjvt3qTj+1zqS+pDjxvXwTEz8GFAg/HOfpvO8hHz301My++H6hvsYvar7dXks9V1em"
    "vXCpJz7acic/EYgFPl7iZT016Vk9fsqlPN7Zsj7Gd36+2GQ7PGmyir7wCMQ90DHWPbStXD4KZ7k+qLDhPexfsD65MMg+ZjpDPpSAYz4ezTi/oZntPaOf"
    "h72SSeO+aussvg5Fsj4VJsO+5gmHPs5RNj6sLSS+W7TVvckJsT5FT92+HpoyP176B77hbmu+MoqlPiF0pj6Qc54+ZMnpPtSR7T3eVJe+9o5vvVDClD2z"
    "Qg++0V83v/SyZT7WKhc/CnXlPiNdub5AqJq7khhEvy43Gj9ZTzO/D4Z6PaIg+j4yBp8+1LJhPmZrBb+6JZ28/NUrvfgDKD6y0bM+eU9/Ph/iQj+h32M+"
    "dpKSvbXECT/ublq+MoYDPXE2Vz1pzx6/0npEPshnxrwkrkm8ewi9PX0Jl76Q6go+1TESPxQznr1OrFu9VY7xvcw2Iz+OX4u+TnVbPpetiD2/BwQ/apCW"
    "PhDdvD00N9K+FUedPgjeAT+AB3W+FvmcPriEZb5+O929Of4Bv+infT5CyNY9WiEfPYEntz6iepY9AzeQPh5HKj61t9y+FZ1ePRQh677RmYm+KIorvjX9"
    "Pz7seQE/J7WuvrF6/Tym/b+9OJbmPKYjSD7k1zY9Mu1JvgXxaz6EKbA+pZ4ZvtuIAT9CWMm9hlo3vlpIVz6CXjK9uGUHvwAZszuFcu0+9HgtP+ahkb6K"
    "tTA+kHcIuzbR1D1v4LA+KsjzPSORrb004SK+ejR2vlrI/z2egC0+MNYjPThMiz4ZFbo+7eMZv+ipPj4hvJ2+w9djPjZELj0hcnw+SogpvmYX4z0Q+Cq/"
    "7M7iPuaEB77IbGK/bnaLPjxTHD8mzG2+2dzwPq4wnL5YaFK/Gok2vfDk2j3w/wE7glrQPc/32z0DXI69TDr2vW5Fab4lwl2+3ZX+vQx8f70sd8++peMK"
    "vhRFIj7iZAA+GhCvvaWQhz3O7Vg95NW0PiLQhD3lzey+QF4jvg+GUT7YQiQ9dEBtPmJGAT7Itcu+XlmFPsiGA78C8IY+eeIiPZ824r5Q4s28uFi7Poys"
    "nr4peHK+qOGnPG5nsb402d6+E7NTPuaYPz44xgW+ayCZPmK7Ir4Ovqm9X00qvcKVCj+N+2I+ClMKImJhY2tib25lLnBhdGNoX2VtYmVkZGluZy5jb252"
    "LmJpYXMSLQgIEgdGbG9hdDMyGiChKJS+uFclPv7EfT18nvG9kRlnvvEEGr1Xea08iOnQvApEChNiYWNrYm9uZS5ub3JtLmdhbW1hEi0ICBIHRmxvYXQz"
    "Mhog7igVP0DH+T4k6oQ/09eGPwfV0z9YR3I/AjmnP1XlrT8KQwoSYmFja2JvbmUubm9ybS5iZXRhEi0ICBIHRmxvYXQzMhog4hOWvAS/vDxKDAS+DVUI"
    "P/ix575n3kK875nUPjhRBL0KXQosYmFja2JvbmUudHJhbnNmb3JtZXIubGF5ZXJzLjAuMC5jZWxsLjAuZ2FtbWESLQgIEgdGbG9hdDMyGiDpJlQ/VPGI"
    "P4E8lD8xypU/q9CKP7LNnD+fUKQ/zP0qPwpcCitiYWNrYm9uZS50cmFuc2Zvcm1lci5sYXllcnMuMC4wLmNlbGwuMC5iZXRhEi0ICBIHRmxvYXQzMhog"
    "icrovaiVhT6lGhY+aSOQPeWVTj42QJI+ycuDvmx1vL4KxgYKMWJhY2tib25lLnRyYW5zZm9ybWVyLmxheWVycy4wLjAuY2VsbC4xLnFrdi53ZWlnaHQS"
    "kAYIGAgIEgdGbG9hdDMyGoAGNFD6vQSXKT8tUgm+fCM1vgRaBT70r08+Wy2BvvmGJj2oGgg9kI8YPsxHgD7euB++iMrCPo2sM7/IpPA+3FywvZ6s+j5F"
    "ppS9lB6fPuzsMj63cVS+lE/svpAwzD2V8yq9pFFYvqrLDT9M6UO97EQUPefKYT7iB1s/kNaNvug7x77+pqm+VM8kP9BRB77kpTI+FeOfPuGIAj4sNi8+"
    "f4APv2LShL3Emj6/CW81vhoDtryoiCa+sDSAPvPAPj4Mr/q91bDgvqcsWb6sQFy+ZkwQP6sg3z7qWQy9jq04vrf3Cj+jrCu+aIfSPjFqVb4cjTo+9pA4"
    "P0td4b73ADY+aJxxvPj95L0Zbnc/0sgDvwTPET/L800+EGyJvEQblb65v02/WC7NvkQXiL04xnG8JxWXPcokij4ioRQ/AKt2vdZVPD6MLKs9/lirPciH"
    "Gr7EBhC/ii+Fvcw8vj1aXBk//JopvgoZab+s7gY9Xgm4vt1oBT6eG8c92lzyPmSAAT6Q3TM9kAtOvcD2Rb+s9Mc+1rk6vlCLxbwgYsM87UjyvrAIML5u"
    "q9Q+ElAaPmD1FTw6gWi+rm72PQ+KJL+0r64+nhuLPQrM1b6KZqq+Yo4gvZ0WQD59rkQ/uPGDPtS/DL+CGim/so2UviOhjL6WFLk8oOYMvmOzIb4hQRS/"
    "zCepvlD5qDsw1049iP84PwUax77M3VM/eMkYvnB1jzu6hrE+wclzPlH1U78ot/E9fOoBPvdCHr94L9C+LkgQPpA6Uz66rTy/XvLUvievxL7Wm06+UA03"
    "vPSO5z7nKoI9zvfSPhKaCj9fuAs/qOKMv0gCeT4GIgy/cAvGvBYphD4grF4+eKv9veiqJz9Tiki/1M+5vfwD7z1lup29RygFvqnTor4sRNI98RABPkBR"
    "Zz4miEc+Ai6zPlwTNr/eLpu+/m7OPmbCIr/sod4+UD5bvZ5pzL4kYAe/PX2evgOqk719trO+p2k7PnYlWr20zPa9wFzhu3wUjD0Q08q90T3JPTE7m76u"
    "JkG+CqABCi9iYWNrYm9uZS50cmFuc2Zvcm1lci5sYXllcnMuMC4wLmNlbGwuMS5xa3YuYmlhcxJtCBgSB0Zsb2F0MzIaYEW5fT7woKe8+cKQviBA0zw0"
    "2Mm+dKAGPWRCxLwTjKQ+IG34voc1vz4ZW9k+A62cPNbYrD7IEoc9F+nLPgd5Dj/sYrW+DwlcP7vKJr7Cy5k+cJ3ovqXFiz2IOGa9KdahvQrGAgoxYmFj"
    "a2JvbmUudHJhbnNmb3JtZXIubGF5ZXJzLjAuMC5jZWxsLjEub3V0LndlaWdodBKQAggICAgSB0Zsb2F0MzIagALqSPw9ZMaSvgB+8DmuXQY/mMMXv2wa"
    "gL4zcuC9SKnDvVZpDr+0FRi+3wESvg77Y740Fw0+bH6TPZjCPj7WM/g+HG0nPxiBDD3Q1RS/P3tLv/xNL7+JTB6/dAERvx4Bmz43Viq/INXNPQAPBzzU"
    "QJE+NNYava8jvj2RuL2+X4pgPpv8jL5C7d+9IIaVPgoxOD9s+p07j1+hvuLAM794Z0k/IS9qvvhwkr4TN0c++vcOPlAt1T14yo28FP/KPcYcEb7gDgI9"
    "UzkDPmtR0z5oz5M+ADZ7PAZMu74jg46+hHHFPmvppD48Dtk+MpzuPhP6M74wg2Y8FXArvuOQo749rg4/CmAKL2JhY2tib25lLnRyYW5zZm9ybWVyLmxh"
    "eWVycy4wLjAuY2VsbC4xLm91dC5iaWFzEi0ICBIHRmxvYXQzMhogwCraPa7bID9JZgs/NCwIP6A6GD4Tojy/ddqAvnq6sz4KXQosYmFja2JvbmUudHJh"
    "bnNmb3JtZXIubGF5ZXJzLjAuMS5jZWxsLjAuZ2FtbWESLQgIEgdGbG9hdDMyGiCUkmo/T7ObPwjHhT/4tFI/tt+jPzHosz9cxUc/QqiTPwpcCitiYWNr"
    "Ym9uZS50cmFuc2Zvcm1lci5sYXllcnMuMC4xLmNlbGwuMC5iZXRhEi0ICBIHRmxvYXQzMhogRWxAPY2SrD3B2v+8cGnAvruA2D60S6C+bLqFvjibST4K"
    "yQQKNGJhY2tib25lLnRyYW5zZm9ybWVyLmxheWVycy4wLjEuY2VsbC4xLmRlbnNlMS53ZWlnaHQSkAQIEAgIEgdGbG9hdDMyGoAESJaWvcWLb76FaBI+"
    "MgR1vpkJ771xnvE9ab0Nv6Qa5T4dg9s+REGbPBA8jDwI0qa+Aiq2PkzWpT0T4U8+aPliv4Z1YD7UfAq/fMGiPfD7Xr7h6tk+gP4pOzCsd73cETc+NUQI"
    "vvYyOr/2ss4+L9n/voQJWz5Q74Q7XjbTPi7GyD18bxi+DH1lvfeEAL6hoiC/5Z0mvj2DV74H2Jo+ri+zPhBuxrwGgwo+5OEGPtSRkr29Lx0+X2X8vXzz"
    "tb3j/re+kMOSPjhO275MhOc+TMxcPpGc177g+IO+05YTv6VHm75FPse+g/EJP9f8n7765Ak+AUO+vgqtmb7eHr6+UHEgv56XAz7VkyU/yu/QPbvdCz4O"
    "gF8+y1cuvlxoCT4o56W+qoxOP5T/gj5v4LS96GIVP8Tn2LzJ9x2/x1A3PlmBCL+wxCu+uOuKvRFCr72SD4C+w8wAvyXSx75oQjm+ACcBvxvlcL7sb9G+"
    "AvNovmhrSj5Di1k+aBZHPeIfQ76atIw+AOOuPXTKcL030YE+mqPPvsilK718UBM9GDkvvlyjuD3g4BK9qlm9vhe0CD9wwTi9cHAgPnBHLr2UE6M+8HGw"
    "vij2Mj++v4u+zLngvo3XGL/ymk09y2nhPijTjr5QaNC+xe2WvlK0ez6on0c9zeVnPtD32j4MJ3e+9wQhv34JML8KgwEKMmJhY2tib25lLnRyYW5zZm9y"
    "bWVyLmxheWVycy4wLjEuY2VsbC4xLmRlbnNlMS5iaWFzEk0IEBIHRmxvYXQzMhpAcpsiPt5/1z6mVcO+S5kcPhLnFz/aKjc/Xr/kPUIgMT7U9Kk98SdM"
    "vlM0Fr82uCW+YSOtPmxsML3drfG+c8GsvgrJBAo0YmFja2JvbmUudHJhbnNmb3JtZXIubGF5ZXJzLjAuMS5jZWxsLjEuZGVuc2UyLndlaWdodBKQBAgI"
    "CBASB0Zsb2F0MzIagATwqaG+7F62vhQQVT4ShqG+VUJmvmjevry0a0++8oIlP597kL0e6eo9XtcPPuwGHL8xVLA+cAeHPV7vmD0G9oM+jyilvthJ1T0s"
    "8ou+/KOBvBBJtz6Aaaq8RCpPvXKvNz60nhs/LLhZPmupij5CSly+6r5VPQzWNj81VuC+/YUGPoO0LT3RlCY/xakKviKczr551yA/TNoFvwZyqD0sNTO+"
    "5eVrPqZwPj0OLau+kBbLO3JF/z34XKc8CFlDPuzJnj3AEOU+NL7CvvyqxrsoS389hnu3PgJkgr5vrhq+R+AOPrj4kD4Ec3O9nkEVPvvrer67PMq8SIzj"
    "viR6TDxQHQi+WhN2vpx7sr44LLa+qrYIv94jDr+QJyU/JJatvkBl4b5E52u+5Vg8PqHTAD9ohgS92YuBPkzohb6bBRI+fJWSvXJchz08Zas+Mu0FP+Iu"
    "SD8wDxC9MMffPd4cyz4e9IW+xJlnPTNKC7+CWIM+2aSWvkKpID+d2cU+YK2Ivoqgi75cBoW+qgTaPoHNNL5yD5q+QVaRvj3oBD+DGK0+mH3HPajGLD50"
    "Zgg+8T4Rv0GdFL728L49jC2ZPUDeej0cr1q+pgtQPeBqtb5yJpW+llNwvk9wr73DWOk+aAqLO6UhDz/MrRS/Cci2vq/gEb8Gt0y+0KO3POKbEr4/nfS+"
    "3Hf7PgpjCjJiYWNrYm9uZS50cmFuc2Zvcm1lci5sYXllcnMuMC4xLmNlbGwuMS5kZW5zZTIuYmlhcxItCAgSB0Zsb2F0MzIaIAMurb6ry6G93L/VvmKu"
    "p70GBoG9WGeBPXr3lD6E7Q4/CvgBCiNoZWFkLmNsYXNzaWZpZXIuMC5jbGFzc2lmaWVyLndlaWdodBLQAQgGCAgSB0Zsb2F0MzIawAE9noC+o2qKvp10"
    "Bb8ayka+AyyTPsj8lbyWVw0/MHeJO54Nw75iLQY+XpELvr2wnj4AqEC65z9zPlCjab4h+1c+XIXpPVf/b77dBaA+4eJjPxOnvj3A0Q489Hdnvhz8w70z"
    "M1k/mOmqPa4pfj6dNdK9oBsLP3Wa076olmA+C9CuPocoDj74WFG9SG7/vmtzQz4dfiI/otErPkrbxT6UpAa90EdqvkrwRr9Q/kq+ZvwMPyiItb6IFSO/"
    "FeObvp4l2D4KSgohaGVhZC5jbGFzc2lmaWVyLjAuY2xhc3NpZmllci5iaWFzEiUIBhIHRmxvYXQzMhoYlqbovrKcDr5KehG/WsYtvyOdOD9olqq+Cn4K"
    "I2hlYWQuY2xhc3NpZmllci4xLmNsYXNzaWZpZXIud2VpZ2h0ElcIAwgGEgdGbG9hdDMyGkgO6qC+/hAIv84WYz5jYAm+KQ5MvjTejD5OnhY+vejdvh7c"
    "kb70w0k+ERA2P6DdXbxGFVa9QI7HvZRqQz/8ls4+Nsg6vpDMFr4KPgohaGVhZC5jbGFzc2lmaWVyLjEuY2xhc3NpZmllci5iaWFzEhkIAxIHRmxvYXQz"
    "MhoMTC8HP148jz7ixQs/"
)
LEGACY_LOGITS = [[0.23104068636894226, 0.863639771938324, 0.0048941969871521], [0.10824230313301086, 0.8151978850364685, -0.004740238189697266]]


def test_legacy_mindcv_layout_written_by_mindspore(tmp_path: Path) -> None:
    import base64

    import numpy as np

    path = tmp_path / "legacy.ckpt"
    path.write_bytes(base64.b64decode("".join(LEGACY_WRITTEN_CKPT)))
    raw = read_ckpt(path)
    assert "backbone.transformer.layers.0.0.cell.1.qkv.weight" in raw and "head.classifier.1.classifier.weight" in raw
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32))
    expect = torch.tensor(LEGACY_LOGITS, dtype=torch.float64)
    # MindSpore < 2 named the class token by its Parameter name, "backbone.cls"
    renamed = {("backbone.cls" if k == "backbone.cls_token" else k): v for k, v in raw.items()}
    write_ckpt(tmp_path / "old_names.ckpt", renamed)
    for file in (path, tmp_path / "old_names.ckpt"):
        imp = import_weights(file, "mindspore", num_heads=2)
        assert imp.model.config.representation_size == 6 and imp.model.config.norm_eps == 1e-7
        with torch.no_grad():
            out = imp.model(x).double()
        assert (out - expect).abs().max().item() <= TOL and torch.equal(out.argmax(-1), expect.argmax(-1))


def test_newer_mindcv_dense_head_layout(tmp_path: Path) -> None:
    """Newer mindcv: the body stays ``blocks.*``, the classifier is a DenseHead (``head.classifier.*``)."""
    ref, names = _mindcv_like()
    newer = {("head.classifier." + k.split(".", 1)[1] if k.startswith("head.") else k): v for k, v in names.items()}
    assert "head.classifier.weight" in newer and "head.weight" not in newer
    write_ckpt(tmp_path / "newer.ckpt", newer)
    write_ckpt(tmp_path / "older.ckpt", names)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for f in ("newer.ckpt", "older.ckpt"):  # both layouts, the same logits as the reference
            imp = import_weights(tmp_path / f, "mindspore", num_heads=2)
            assert imp.model.num_classes == 10 and (imp.model(x) - ref(x)).abs().max().item() <= TOL


def _pico_mindcv(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A mindcv-named checkpoint with exactly vit_pico_patch4_32's shapes (MindSpore numerics)."""
    ref, names = _mindcv_like(patch_size=4, embed_dim=128, depth=6, num_heads=4, mlp_ratio=2.0)
    write_ckpt(tmp_path / "pico.ckpt", names)
    return ref, tmp_path / "pico.ckpt"


def test_numerics_travel_through_create_model_and_pretrained(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import vitlab
    from vitlab.api import load_checkpoint

    ref, ckpt = _pico_mindcv(tmp_path)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with caplog.at_level("WARNING", logger="vitlab.weights"), torch.no_grad():
        model = vitlab.create_model("vit_pico_patch4_32", weights=ckpt).eval()
        assert (model.config.norm_eps, model.config.act) == (1e-7, "gelu_tanh")  # not the preset's 1e-6 / exact GELU
        assert (model(x) - ref(x)).abs().max().item() <= TOL
        notes = [r.getMessage() for r in caplog.records if "own numerics" in r.getMessage()]
        assert len(notes) == 1 and "norm_eps=1e-07" in notes[0] and "act='gelu'" in notes[0]
        # given explicitly, the caller's numerics are kept, and then the logits are off: the numerics matter
        forced = vitlab.create_model("vit_pico_patch4_32", weights=ckpt, norm_eps=1e-6, act="gelu").eval()
        assert forced.config.norm_eps == 1e-6 and (forced(x) - ref(x)).abs().max().item() > 10 * TOL
    assert main(["pretrained", "vit_pico_patch4_32", "--weights", str(ckpt), "--out", str(tmp_path / "p.safetensors")]) == 0
    saved = load_checkpoint(tmp_path / "p.safetensors").model
    assert (saved.config.norm_eps, saved.config.act) == (1e-7, "gelu_tanh")
    with torch.no_grad():
        assert (saved(x) - ref(x)).abs().max().item() <= TOL


def test_numerics_travel_through_train_weights(tmp_path: Path, digit_folder: Path) -> None:
    from vitlab.api import load_checkpoint

    _, names = _mindcv_like(patch_size=4, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0)
    write_ckpt(tmp_path / "small.ckpt", names)
    small = [f"model_args.{k}={v}" for k, v in (("depth", 1), ("embed_dim", 32), ("num_heads", 2), ("mlp_dim", 64))]
    assert main(["train", "--data", str(digit_folder), "--model", "vit_pico_patch4_32", "--weights", str(tmp_path / "small.ckpt"),
                 *[a for kv in small for a in ("--set", kv)], "--epochs", "1", "--batch-size", "12", "--no-progress",
                 "--device", "cpu", "--workers", "0", "--set", "max_steps_per_epoch=1", "--set", "tensorboard=false",
                 "--out", str(tmp_path / "run")]) == 0
    tuned = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors").model
    assert (tuned.config.norm_eps, tuned.config.act) == (1e-7, "gelu_tanh") and tuned.num_classes == 3
    assert all(m.eps == 1e-7 for m in tuned.modules() if isinstance(m, torch.nn.LayerNorm))
    assert all(b.mlp.act.approximate == "tanh" for b in tuned.blocks)
