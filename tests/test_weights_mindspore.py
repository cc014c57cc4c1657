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
