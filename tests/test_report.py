"""``vitlab report``: one self-contained HTML page, checked as text and in a real headless browser."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vitlab.api import create_model
from vitlab.cli.main import main
from vitlab.weights.vitlab_format import save_weights

CHROMIUM = Path("/usr/bin/chromium")
SECTIONS = ["summary", "curves", "confusion", "predictions", "maps", "rollout", "distance", "collapse", "entropy",
            "posembed", "filters", "outliers"]
IMAGES = len(SECTIONS) - 1 + 1  # one figure a section but the summary; outliers has two
CLASSES = ["digit0", "digit1", "digit2"]
LRS = [2.5e-4, 5e-4, 7.5e-4, 1e-3]  # a warmup, logged at every step


def make_run(root: Path, data: Path) -> Path:
    """A run folder as `vitlab train` writes it: config.yaml, metrics.jsonl, checkpoints/best.safetensors."""
    torch.manual_seed(0)
    model = create_model("vit_pico_patch4_28", depth=2, embed_dim=32, num_heads=2, mlp_dim=64, num_classes=3)
    save_weights(root / "checkpoints" / "best.safetensors", model, CLASSES, {"epoch": 1, "val_top1": 50.0})
    records = [{"kind": "train", "epoch": e, "step": s, "loss": 1.1 - 0.05 * s, "lr": LRS[s - 1]}
               for e, s in [(0, 1), (0, 2), (1, 3), (1, 4)]]
    records[2:2] = [{"kind": "epoch", "epoch": 0, "step": 2, "val_loss": 1.0, "val_top1": 40.0, "val_top5": 100.0}]
    records += [{"kind": "epoch", "epoch": 1, "step": 4, "val_loss": 0.9, "val_top1": 50.0, "val_top5": 100.0}]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "tr')  # torn tail
    (root / "config.yaml").write_text(yaml.safe_dump({"model": "vit_pico_patch4_28", "data": {"train": str(data)}}))
    return root


DRAWN: dict[str, list] = {}  # what the report's figures were drawn from, read back by the tests


@pytest.fixture(scope="module")
def report(digit_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vitlab.analysis import plots

    run = make_run(tmp_path_factory.mktemp("run"), digit_folder)
    real_grid, real_curves = plots.save_overlay_grid, plots.save_curves

    def grid(images, heats, titles, dest, *args, **kwargs):
        scale = real_grid(images, heats, titles, dest, *args, **kwargs)
        DRAWN.setdefault("grids", []).append((list(titles), scale))
        return scale

    def curves(records, dest):
        DRAWN["curves"] = real_curves(records, dest)
        return DRAWN["curves"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "save_overlay_grid", grid)
        mp.setattr(plots, "save_curves", curves)
        assert main(["report", str(run), "--limit", "6", "--show", "1", "--device", "cpu", "--quiet"]) == 0
    return run / "report.html"


def test_report_figures_tell_the_truth(report: Path) -> None:
    page = report.read_text()
    predictions, rollout = DRAWN["grids"]  # the predictions section is drawn first
    assert all(re.fullmatch(r"digit\d \(p=\d\.\d\d\),(\n| )true: digit\d", t) for t in predictions[0]), predictions[0]
    for _, scale in (predictions, rollout):
        assert scale.vmin == 0.0 and scale.vmax > 0
    lr = DRAWN["curves"].axes[2]
    assert list(lr.lines[0].get_ydata()) == LRS and lr.get_title() == "learning rate (every step)"
    # An untrained model attends near uniformly: the page says so where the maps are.
    def section(sid: str) -> str:
        return page[page.index(f'<section id="{sid}">'):].split("</section>")[0]

    # The seeded untrained model attends near uniformly: each attention section says so beside its figure.
    assert rollout[1].note and "near-uniform attention" in section("rollout")
    assert "near-uniform attention" in section("maps") and "one absolute colour scale" in section("maps")
    assert "attend near uniformly" in section("collapse") and "--collapse-similarity centered" in section("collapse")


def test_report_is_one_self_contained_page(report: Path) -> None:
    page = report.read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page, sid
    assert page.count('<p class="explain">') == len(SECTIONS)
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page) and "<link" not in page
    srcs = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert len(srcs) == IMAGES
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert "top-1 on these 6 images" in page


def test_report_on_a_bare_checkpoint(tmp_path: Path, digit_folder: Path) -> None:
    ckpt = make_run(tmp_path / "run", digit_folder) / "checkpoints" / "best.safetensors"
    shutil.move(ckpt, tmp_path / "alone.safetensors")
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "alone.safetensors"), "--out", str(out)]) == 0
    page = out.read_text()
    assert 'id="posembed"' in page and 'id="filters"' in page and 'id="rollout"' not in page
    assert "no images given" in page


def test_report_bad_target(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path)]) == 4
    assert "not a run folder" in capsys.readouterr().err


def _chromium(url: str, *args: str, tmp: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([str(CHROMIUM), *flags, *args, url], capture_output=True, text=True, timeout=120)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_report_renders_in_a_real_browser(report: Path, tmp_path: Path) -> None:
    url = report.resolve().as_uri()
    dom = _chromium(url, "--dump-dom", tmp=tmp_path / "profile1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    # Set by the page's own script on load: it ran, saw no script errors and no undecodable image.
    assert 'data-ready="yes"' in body and 'data-js-errors="0"' in body and 'data-broken-images="0"' in body, body
    assert f'data-images="{IMAGES}"' in body
    for sid in SECTIONS:
        assert f'id="{sid}"' in dom.stdout
    assert dom.stdout.count("near-uniform attention") >= 2  # the notes reach the rendered page
    # The console saw exactly the page's own line: no uncaught error, no warning.
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert len(console) == 1 and "vitlab report rendered" in console[0], console

    png = tmp_path / "shot.png"
    shot = _chromium(url, f"--screenshot={png}", "--window-size=1200,3000", "--hide-scrollbars",
                     tmp=tmp_path / "profile2")
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels.std() > 20  # not blank: the dark header, white cards and figures all show
    rows = pixels.std(axis=(1, 2))
    assert (rows[:2400] > 5).mean() > 0.3  # content spread down the page, not one strip
