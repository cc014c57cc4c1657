"""Untrusted files (images, weights) never run code, never exhaust memory, never corrupt data.

Each test has a negative control where one is cheap: what plain Pillow / os.walk / np.load would do.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitlab.data.bad_samples import ImagePolicy, SubstitutedLabel, collate_counting
from vitlab.data.cache import cache_folder
from vitlab.data.files import images_in
from vitlab.data.folder import ImageFolderDataset
from vitlab.data.image_io import ENV_MAX_PIXELS, PILLOW_DEFAULT_MAX_PIXELS, max_image_pixels, open_image, read_header
from vitlab.data.seeded import SeededTransform
from vitlab.data.sources import open_source
from vitlab.errors import DataError
from vitlab.weights.errors import MalformedFileError
from vitlab.weights.io import ENV_MAX_BYTES, read_npz, read_torch
from vitlab.weights.mindspore_ckpt import encode_record, read_ckpt

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n%%EOF\n"


def _png(path: Path, array: np.ndarray, **save: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def _noise(h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _folder(root: Path, per_class: int = 3) -> Path:
    for c in ("a", "b"):
        for i in range(per_class):
            _png(root / c / f"{i}.png", _noise(seed=hash((c, i)) % 1000))
    return root


def _patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR announces ``width`` x ``height`` (CRC fixed up), the pixel data unchanged."""
    ihdr = data.index(b"IHDR")
    body = struct.pack(">II", width, height) + data[ihdr + 12: ihdr + 17]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return data[:ihdr + 4] + body + crc + data[ihdr + 21:]


# --- formats and pixel limits --------------------------------------------------------------------


def test_eps_is_never_parsed_even_named_png(tmp_path: Path) -> None:
    assert Image.open(io.BytesIO(EPS)).format == "EPS"  # control: plain Pillow takes it (and would run gs)
    fake = tmp_path / "data" / "a" / "x.png"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(EPS)
    with pytest.raises(DataError, match="x.png: cannot read image .not a JPEG, PNG"):
        open_image(fake)
    with pytest.raises(DataError, match="x.png"):
        ImageFolderDataset(tmp_path / "data").verify()


def test_bomb_header_is_refused_before_decoding(tmp_path: Path) -> None:
    small = io.BytesIO()
    Image.new("L", (8, 8)).save(small, "PNG")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_patch_png_size(small.getvalue(), 60_000, 60_000))  # 3.6e9 pixels, 80 bytes
    with pytest.raises(DataError, match="refused before decoding"):
        read_header(bomb)
    with pytest.raises(DataError, match="refused before decoding"):
        open_image(bomb)


def test_warning_level_bomb_is_an_error_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the limit and 2x the limit Pillow only warns; here it is refused (a settable limit)."""
    path = _png(tmp_path / "x.png", _noise(12, 10))  # 120 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.warns(Image.DecompressionBombWarning):  # control: plain Pillow opens it, with a warning
        Image.open(path).load()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOW_DEFAULT_MAX_PIXELS)
    with pytest.raises(DataError, match="120 pixels; the limit is 100"):
        open_image(path, max_pixels=100)
    assert open_image(path, max_pixels=120).size == (10, 12)


def test_pixel_limit_from_env_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _png(tmp_path / "x.png", _noise(12, 10))
    assert max_image_pixels() == PILLOW_DEFAULT_MAX_PIXELS
    monkeypatch.setenv(ENV_MAX_PIXELS, "100")
    assert max_image_pixels() == 100 and max_image_pixels(500) == 500
    with pytest.raises(DataError, match=ENV_MAX_PIXELS):
        open_image(path)
    assert open_image(path, max_pixels=500).size == (10, 12)
    monkeypatch.setenv(ENV_MAX_PIXELS, "lots")
    with pytest.raises(DataError, match="whole number"):
        max_image_pixels()


def test_large_real_image_refused_by_the_same_limit_everywhere(tmp_path: Path) -> None:
    """A genuine 2000x2000 image over a 1M-pixel limit: folder verify, item, cache, COCO, predict's opener."""
    from vitlab.detection.coco import CocoDetection

    root = tmp_path / "data"
    _png(root / "a" / "big.png", np.zeros((2000, 2000), np.uint8))
    _png(root / "b" / "small.png", _noise())
    policy = ImagePolicy(max_pixels=1_000_000, strict=True)
    ds = open_source(str(root), "train", policy=policy, carve_val=False)  # the whole folder: no val carve-out
    for action in (ds.verify, lambda: ds[0], lambda: cache_folder(ds), lambda: open_image(root / "a" / "big.png", 10**6)):
        with pytest.raises(DataError, match="4,000,000 pixels; the limit is 1,000,000"):
            action()
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "big.png", "height": 2000, "width": 2000}],
                               "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(DataError, match="the limit is 1,000,000"):
        CocoDetection(root / "a", ann, max_pixels=10**6).load(0)
    assert ImageFolderDataset(root, policy=ImagePolicy(max_pixels=5_000_000))[0][0].size == (2000, 2000)


def test_config_has_documented_data_settings() -> None:
    from vitlab.config import TrainConfig
    from vitlab.errors import ConfigError

    cfg = TrainConfig()
    assert (cfg.data.max_image_pixels, cfg.data.strict, cfg.data.max_bad_samples) == (None, False, 100)
    cfg.data.max_image_pixels = 0
    with pytest.raises(ConfigError, match="data.max_image_pixels"):
        cfg.validate()
    assert ImagePolicy.from_settings(TrainConfig().data) == ImagePolicy()


# --- every mode to correct RGB, the same on the folder and the cache path ------------------------


def _both_paths(root: Path) -> list[torch.Tensor]:
    """Each image as (3, H, W) uint8 through the dataset (train / eval / predict) and through data.cache."""
    ds = ImageFolderDataset(root)
    plain = [torch.from_numpy(np.array(ds[i][0])).permute(2, 0, 1) for i in range(len(ds))]
    cached = cache_folder(ds)
    for i, p in enumerate(plain):
        assert torch.equal(cached.images[i], p), ds.samples[i][0]
    return plain


def test_16_bit_grey_keeps_its_levels(tmp_path: Path) -> None:
    levels = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)  # 0 .. 65535
    path = _png(tmp_path / "d" / "a" / "g16.png", levels)
    assert Image.open(path).mode == "I;16"
    assert (np.asarray(Image.open(path).convert("RGB")) == 255).mean() > 0.99  # control: clipped to white
    (rgb,) = _both_paths(tmp_path / "d")
    assert torch.equal(rgb[0], torch.arange(256, dtype=torch.uint8).reshape(16, 16))
    assert torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])


def test_exif_orientation_applied_on_both_paths(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 20 wide x 10 high, to be shown rotated 90 degrees
    path = tmp_path / "d" / "a" / "turned.jpg"
    path.parent.mkdir(parents=True)
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white
    Image.fromarray(arr).save(path, "JPEG", exif=exif, quality=95)
    assert Image.open(path).size == (20, 10)  # control: Pillow's raw pixels are not upright
    (rgb,) = _both_paths(tmp_path / "d")
    assert rgb.shape == (3, 20, 10)
    assert rgb[:, :8].float().mean() > 200 and rgb[:, 12:].float().mean() < 50  # white on top after the turn


def test_alpha_palette_cmyk_and_animation(tmp_path: Path) -> None:
    root = tmp_path / "d" / "a"
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red under...
    rgba[:2, ..., 3] = 255  # ...opaque top half, fully transparent bottom half
    _png(root / "0_rgba.png", rgba)
    la = np.stack([np.full((4, 4), 200, np.uint8), np.full((4, 4), 128, np.uint8)], -1)
    _png(root / "1_la.png", la)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.save(root / "2_pal.png", transparency=0)
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(root / "3_cmyk.tif")
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(root / "4_anim.gif", save_all=True, append_images=frames[1:])
    out = _both_paths(tmp_path / "d")
    assert out[0][:, 0, 0].tolist() == [255, 0, 0] and out[0][:, 3, 0].tolist() == [0, 0, 0]
    assert np.array(Image.open(root / "0_rgba.png").convert("RGB"))[3, 0].tolist() == [255, 0, 0]  # control
    assert out[1][:, 0, 0].tolist() == [100, 100, 100]  # 200 * 128 / 255
    assert out[2][:, 0, 0].tolist() == [0, 255, 0]
    assert out[3][:, 0, 0].tolist() == [255, 0, 0]
    assert out[4][:, 0, 0].tolist() == [255, 0, 0]  # the first frame


# --- truncated files mid-run -------------------------------------------------------------------


def _with_truncated(root: Path) -> Path:
    _folder(root)
    bad = root / "a" / "1.png"
    data = io.BytesIO()
    Image.fromarray(_noise(64, 64, 7)).save(data, "PNG")
    bad.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])  # header intact, pixels cut
    return bad


def test_truncated_file_passes_the_header_check_then_is_substituted(tmp_path: Path) -> None:
    bad = _with_truncated(tmp_path / "d")
    ds = ImageFolderDataset(tmp_path / "d")
    ds.verify()  # the header is fine: only decoding finds it
    index = [p for p, _ in ds.samples].index(bad)
    image, label = ds[index]
    assert isinstance(label, SubstitutedLabel) and label == ds.targets[index + 1]
    assert np.array_equal(np.array(image), np.array(ds[index + 1][0]))  # the next index stands in
    # Deterministic, also in a fresh copy (a resumed run) and under per-sample seeded augmentation.
    seeded = [SeededTransform(ImageFolderDataset(tmp_path / "d"), lambda im: np.array(im), 3) for _ in range(2)]
    assert np.array_equal(seeded[0][index][0], seeded[1][index][0])
    batch = collate_counting([(torch.zeros(1), 0), (torch.zeros(1), ds[index][1])])
    assert batch[2].item() == 1 and batch[1].tolist() == [0, int(ds.targets[index + 1])]


def test_strict_and_threshold_stop_the_run(tmp_path: Path) -> None:
    bad = _with_truncated(tmp_path / "d")
    index = [p for p, _ in ImageFolderDataset(tmp_path / "d").samples].index(bad)
    with pytest.raises(DataError, match="1.png.*strict"):
        ImageFolderDataset(tmp_path / "d", policy=ImagePolicy(strict=True))[index]
    with pytest.raises(DataError, match="more than data.max_bad_samples=0"):
        ImageFolderDataset(tmp_path / "d", policy=ImagePolicy(max_bad_samples=0))[index]


def test_training_counts_bad_samples_in_the_epoch_record(tmp_path: Path) -> None:
    from vitlab.config import resolve_config
    from vitlab.trainer import train

    _with_truncated(tmp_path / "d" / "train")
    _folder(tmp_path / "d" / "val", 1)
    cfg = resolve_config(None, [{"model": "vit_pico_patch4_28", "data": {"train": str(tmp_path / "d"), "batch_size": 2,
                                 "eval_batch_size": 4}, "model_args": {"depth": 1, "embed_dim": 16, "num_heads": 2,
                                 "mlp_dim": 16, "img_size": 16}, "epochs": 1, "device": "cpu"}])
    train(cfg, tmp_path / "run", progress=False, echo=lambda s: None)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (epoch,) = [r for r in records if r["kind"] == "epoch"]
    assert epoch["bad_samples"] == 1 and epoch["images"] == 6


def test_predict_reports_each_bad_file_and_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vitlab.api import create_model
    from vitlab.cli.main import main
    from vitlab.weights.vitlab_format import save_weights

    ckpt = tmp_path / "m.safetensors"
    save_weights(ckpt, create_model("vit_pico_patch4_28", depth=1, embed_dim=16, num_heads=2, mlp_dim=16, num_classes=2),
                 ["a", "b"], {"epoch": 0})
    bad = _with_truncated(tmp_path / "d")
    (tmp_path / "d" / "a" / "2.png").write_bytes(EPS)
    code = main(["predict", str(ckpt), str(tmp_path / "d"), "--format", "json", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 3
    assert len(json.loads(out)) == 4  # the four readable images
    skipped = [line for line in err.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 2 and str(bad) in skipped[0] and "2.png" in skipped[1]


# --- folders with links ---------------------------------------------------------------------------


def test_link_loops_never_multiply_the_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _folder(tmp_path / "d", per_class=4)
    os.symlink("..", root / "a" / "up")  # a link to an ancestor
    os.symlink(".", root / "a" / "self")  # a loop
    os.symlink(root / "b", root / "a" / "other")  # a genuine link elsewhere: followed once, reported
    walk = os.walk(root / "a", followlinks=True)
    walked = sum(len(f) for _, _, f in itertools.islice(walk, 50))
    assert walked > 40  # control: os.walk follows the loops (exponentially: stopped after 50 folders here)
    with caplog.at_level(logging.WARNING, logger="vitlab.data"):
        ds = ImageFolderDataset(root)
    assert len(ds) == 12 and ds.targets.count(0) == 8  # a's 4 and b's 4 through the link; b's own 4
    assert len(ds.links.followed) == 1 and len(ds.links.skipped) >= 2
    (line,) = [r.getMessage() for r in caplog.records if r.name == "vitlab.data"]
    assert "followed 1 directory link" in line and "skipped" in line
    assert len(images_in(root / "a")) == 8


# --- weight files ---------------------------------------------------------------------------------


def _npz_member(zf: zipfile.ZipFile, name: str, header_shape: tuple[int, ...], payload: bytes) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": header_shape})
    zf.writestr(name, buf.getvalue() + payload)


def test_npz_header_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as zf:
        _npz_member(zf, "w.npy", (2**30,), b"\0" * 16)  # claims 4 GiB, holds 16 bytes
    with zipfile.ZipFile(path) as zf, zf.open("w.npy") as f:  # control: numpy's own reader takes the claim
        np.lib.format.read_magic(f)
        assert np.lib.format.read_array_header_1_0(f)[0] == (2**30,)
    tracemalloc.start()
    with pytest.raises(MalformedFileError, match=r"lie.npz: not a readable .npz \(member 'w.npy' declares shape"):
        read_npz(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2**20


def test_npz_zip_bomb_is_refused_before_inflating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.npz"
    n = 300 * 2**20 // 4  # 300 MiB of float32 zeros deflate to ~300 KB
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("w.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
            chunk = bytes(2**22)
            for _ in range(n * 4 // len(chunk)):
                f.write(chunk)
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    with pytest.raises(MalformedFileError, match="would inflate to 314,572,928 bytes"):
        read_npz(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2**20
    monkeypatch.setenv(ENV_MAX_BYTES, str(2**29))  # trusted: allowed explicitly
    assert read_npz(path)["w"].shape == (n,)


def test_npz_declared_size_beyond_deflate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez_compressed(path, w=np.ones(64, np.float32))
    data = bytearray(path.read_bytes())
    cd = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 2**31)  # central directory: uncompressed size
    path.write_bytes(bytes(data))
    with pytest.raises(MalformedFileError, match="impossible"):
        read_npz(path)


def test_npz_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(MalformedFileError, match="dtype object"):
        read_npz(tmp_path / "obj.npz")


def test_mindspore_record_claiming_huge_dims_allocates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    path.write_bytes(encode_record("w", [2**40], "Float32", b"\0" * 8))
    tracemalloc.start()
    with pytest.raises(MalformedFileError, match="has 8 bytes; dims"):
        read_ckpt(path)
    assert tracemalloc.get_traced_memory()[1] < 2**20
    tracemalloc.stop()
    path.write_bytes(encode_record("w", [1] * 40, "Float32", b"\0" * 4))
    with pytest.raises(MalformedFileError, match="more than 32 dims"):
        read_ckpt(path)


def test_torch_zip_with_a_lying_record_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.pth"
    torch.save({"w": torch.ones(4)}, path)
    data = bytearray(path.read_bytes())
    cd = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, 2**31)
    path.write_bytes(bytes(data))
    with pytest.raises(MalformedFileError, match="s.pth: not a readable torch file"):
        read_torch(path)


def test_resume_with_a_bad_file_is_bitwise(tmp_path: Path) -> None:
    """A mid-epoch kill and resume with loader workers: the same stand-in, the same losses and weights."""
    import signal

    from run_helpers import last_weights_equal, losses, records, signal_at
    from vitlab.cli.main import main

    data = tmp_path / "d"
    for split, n in (("train", 24), ("val", 2)):
        for c in ("a", "b"):
            for i in range(n):
                _png(data / split / c / f"{i}.png", _noise(28, 28, seed=i * 2 + (c == "b")))
    cut = (data / "train" / "a" / "5.png").read_bytes()
    (data / "train" / "a" / "5.png").write_bytes(cut[: len(cut) // 2])
    args = ["--data", str(data), "--model", "vit_pico_patch7_28", "--set", "model_args.depth=1",
            "--set", "model_args.embed_dim=32", "--set", "model_args.num_heads=2", "--set", "model_args.mlp_dim=64",
            "--batch-size", "4", "--epochs", "2", "--no-progress", "--device", "cpu", "--workers", "2",
            "--set", "log_every=1", "--set", "checkpoint.every_steps=2", "--set", "data.augment.hflip=0.5"]
    reference, run = tmp_path / "ref", tmp_path / "run"
    assert main(["train", *args, "--out", str(reference)]) == 0
    proc = signal_at(["train", *args, "--out", str(run)], run, 3, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL and max(s for s, _ in losses(run)) < 24
    assert main(["train", "--resume", "auto", *args, "--out", str(run)]) == 0
    assert losses(run) == losses(reference) and last_weights_equal(run, reference)
    counts = [r["bad_samples"] for r in records(run, "epoch")]
    assert counts == [1, 1] == [r["bad_samples"] for r in records(reference, "epoch")]
