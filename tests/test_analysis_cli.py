"""``vitlab analyze`` end to end on tiny models, and the batch runner behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from vitlab.analysis import (AnalysisOptions, attention_rollout, capture_attention, collect_attention,
                             mean_attention_distance)
from vitlab.analysis.layout import layout_of
from vitlab.api import create_model
from vitlab.cli.main import main
from vitlab.weights.vitlab_format import save_weights

CLASSES = ["digit0", "digit1", "digit2"]


def tiny_model(**kw):
    torch.manual_seed(0)
    return create_model("vit_pico_patch4_28", depth=3, embed_dim=32, num_heads=2, mlp_dim=64, num_classes=3, **kw)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_weights(path, tiny_model(), CLASSES, {"epoch": 0})
    return path


def test_analyze_all_writes_every_figure(checkpoint: Path, digit_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "an"
    code = main(["analyze", "all", "--model", str(checkpoint), "--images", str(digit_folder), "--limit", "5",
                 "--show", "2", "--out", str(out), "--device", "cpu"])
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"attention_maps_0.png", "attention_maps_1.png", "rollout.png", "distance.png", "collapse.png",
                     "entropy.png", "posembed.png", "filters.png", "outliers.png", "outlier_maps.png",
                     "summary.json"}
    for p in out.glob("*.png"):
        with Image.open(p) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    s = json.loads((out / "summary.json").read_text())
    assert s["images"] == 5 and len(s["layers"]) == 3 and s["grid"] == [7, 7]
    assert len(s["mean_attention_distance_px"]) == 3 and len(s["mean_attention_distance_px"][0]) == 2
    cross = torch.tensor(s["cross_layer_similarity"])
    torch.testing.assert_close(cross.diagonal(), torch.ones(3))
    assert set(s["neighbour_similarity"]) == {"1", "2", "3"} and len(s["neighbour_similarity"]["1"]) == 2
    assert all(n.startswith(str(digit_folder)) for n in s["image_names"])


def test_analyze_a_registered_model_at_another_size(tmp_path: Path) -> None:
    out = tmp_path / "d"
    code = main(["analyze", "distance", "--model", "vit_pico_patch7_28", "--img-size", "42", "--images", "mnist-test",
                 "--limit", "3", "--distance-prefix", "zero", "--out", str(out), "--device", "cpu"])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["grid"] == [6, 6] and s["options"]["distance_prefix"] == "zero"
    assert {p.name for p in out.iterdir()} == {"distance.png", "summary.json"}


def test_analyze_weights_only_needs_no_images(tmp_path: Path, checkpoint: Path) -> None:
    assert main(["analyze", "posembed", "--model", str(checkpoint), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "posembed.png").is_file()


def test_analyze_bad_input(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["analyze", "rollout", "--model", str(checkpoint), "--out", str(tmp_path / "x")]) == 2
    assert "needs --images" in capsys.readouterr().err
    assert main(["analyze", "filters", "--model", "vit_pico_convstem_patch4_28", "--out", str(tmp_path / "y")]) == 2
    assert "no linear patch projection" in capsys.readouterr().err
    assert main(["analyze", "maps", "--model", "no_such_model", "--images", "mnist-test", "--out", str(tmp_path)]) == 2
    assert main(["analyze", "maps", "--model", str(checkpoint), "--images", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "z")]) == 3
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()


def test_runner_matches_the_functions_on_one_batch() -> None:
    model = tiny_model().eval()
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    stats = collect_attention(model, [x[:4], x[4:]], AnalysisOptions(show=3, discard_ratio=0.3))
    assert stats.cls_maps.shape == (3, 3, 2, 7, 7) and stats.saliency.shape == (6, 7, 7)
    with torch.no_grad(), capture_attention(model) as cap:
        logits = model(x)
    maps, layout = cap.effective(), layout_of(model)
    torch.testing.assert_close(stats.logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats.distance[:, 1], mean_attention_distance(maps[1], layout), rtol=1e-4, atol=1e-4)
    roll = attention_rollout(maps, "mean", 0.3)
    torch.testing.assert_close(stats.saliency, roll[:, 0, 1:].reshape(6, 7, 7), rtol=1e-4, atol=1e-5)
    assert not model.training
