"""``vitlab analyze`` on a DETR: the paper's encoder self-attention and decoder cross-attention figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vitlab.analysis.detr_attention import detr_attention
from vitlab.cli.main import main
from vitlab.detection.synthetic import ShapesDataset
from vitlab.models.detr import create_detr
from vitlab.weights.vitlab_format import save_weights

CLASSES = ["circle", "square", "triangle"]


def _tiny_detr(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_detr("detr_vit_pico_64", num_classes=3, num_queries=5, **kw)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny DETR saved as a vitlab checkpoint (a fraction of a second)."""
    path = tmp_path_factory.mktemp("detr") / "detr.safetensors"
    save_weights(path, _tiny_detr(), CLASSES, {"epoch": 0})
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    for i in range(3):
        ShapesDataset(3, 64).load(i)[0].save(folder / f"s{i}.png")
    return folder


def test_detr_attention_shapes() -> None:
    model = _tiny_detr(dec_layers=3).eval()
    att = detr_attention(model, torch.randn(1, 3, 48, 64))
    assert att.feature_size == (8, 8) and att.stride == 8  # the ViT backbone pads to 64x64
    assert len(att.encoder) == 1 and att.encoder[0].shape == (1, 4, 64, 64)
    assert len(att.decoder) == 3 and att.decoder[0].shape == (1, 4, 5, 64)
    assert att.encoder_map(0, (10.0, 60.0)).shape == (8, 8)
    maps = att.decoder_maps(0, att.top_queries(0, 2))
    assert maps.shape == (2, 8, 8) and att.to_pixels(maps, (48, 64)).shape == (2, 48, 64)
    torch.testing.assert_close(maps[:, :6].sum((-1, -2)), torch.ones(2))  # rows 6, 7 are padding (48 / 8 = 6)


def test_detr_attention_reads_a_sigmoid_class_head_as_sigmoid() -> None:
    """A focal-loss DETR (class_head sigmoid, anchor queries) has C logits, no "no object" slot."""
    model = _tiny_detr(class_head="sigmoid", anchor_queries=True).eval()
    att = detr_attention(model, torch.randn(1, 3, 64, 64))
    logits = model(torch.randn(1, 3, 64, 64))["pred_logits"]
    assert logits.shape[-1] == 3 and att.class_head == "sigmoid"
    torch.testing.assert_close(att.scores(), att.pred_logits.sigmoid().max(-1).values)
    # Negative control: the paper head's reading (softmax, last class dropped) is a different score.
    softmax_read = att.pred_logits.softmax(-1)[..., :-1].max(-1).values
    assert not torch.allclose(att.scores(), softmax_read)


def test_analyze_detr_writes_encoder_and_decoder_figures(checkpoint: Path, shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "an"
    code = main(["analyze", "all", "--model", str(checkpoint), "--images", str(shapes), "--show", "2",
                 "--out", str(out), "--device", "cpu"])
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"detr_encoder_0.png", "detr_decoder_0.png", "detr_encoder_1.png", "detr_decoder_1.png",
                     "summary.json"}
    assert (out / "detr_decoder_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["analyses"] == ["encoder", "decoder"] and len(summary["images"]) == 2
    top = summary["images"][0]["top_queries"]
    assert len(top) == 4 and top[0]["class"] in CLASSES and summary["images"][0]["feature_size"] == [8, 8]


def test_analyze_detr_one_kind(checkpoint: Path, shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "dec"
    assert main(["analyze", "decoder", "--model", str(checkpoint), "--images", str(shapes / "s0.png"),
                 "--out", str(out), "--device", "cpu"]) == 0
    assert {p.name for p in out.iterdir()} == {"detr_decoder_0.png", "summary.json"}


def test_analyze_detr_bad_requests(checkpoint: Path, shapes: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    code = main(["analyze", "rollout", "--model", str(checkpoint), "--images", str(shapes), "--out", str(tmp_path)])
    assert code != 0 and "not for a DETR" in capsys.readouterr().err
    code = main(["analyze", "decoder", "--model", str(checkpoint), "--out", str(tmp_path)])
    assert code != 0 and "needs --images" in capsys.readouterr().err
    code = main(["analyze", "encoder", "--model", "vit_pico_patch4_28", "--images", str(shapes),
                 "--out", str(tmp_path)])
    assert code != 0 and "DETR only" in capsys.readouterr().err


def test_report_points_a_detr_to_analyze(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["report", str(checkpoint), "--out", str(tmp_path / "r.html")])
    assert code != 0 and "vitlab analyze all" in capsys.readouterr().err
