"""Integrity (issue 15): a changed byte anywhere in a checkpoint is found, on resume and on load;
a resumed run refuses other data than it started with; downloads are hash-checked.

The runs are the tiny CPU runs of tests/test_resume.py (2 epochs x 4 steps, a checkpoint every 3
steps and at epoch ends, the newest 2 kept: steps 6 and 8 at the end).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from run_helpers import last_weights_equal
from vitlab.cli.main import main
from vitlab.engine.task import fingerprint_changes
from vitlab.errors import CheckpointError, DownloadError
from vitlab.weights import hub
from vitlab.weights.checksums import CHECKSUM_KEY, STATE_KEY, digest_tag, verify_safetensors
from vitlab.weights.errors import HashMismatchError
from vitlab.weights.rebuild import load_checkpoint
from vitlab.weights.vitlab_format import load_state, read_metadata, read_tensors

ARGS = ["--model", "vit_pico_patch7_28", "--set", "model_args.depth=2", "--set", "model_args.embed_dim=32",
        "--set", "model_args.num_heads=2", "--set", "model_args.mlp_dim=64", "--set", "model_args.drop_path_rate=0.2",
        "--batch-size", "8", "--epochs", "2", "--no-progress", "--device", "cpu", "--set", "log_every=1",
        "--set", "checkpoint.every_steps=3", "--set", "data.augment.affine_degrees=15", "--set", "tensorboard=false",
        "--set", "ema.decay=0.9"]


def _flip(path: Path, where: int) -> None:
    data = bytearray(path.read_bytes())
    data[where] ^= 0x01  # one bit: the smallest change there is
    path.write_bytes(bytes(data))


def _data_start(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def _positions(path: Path) -> dict[str, int]:
    """Byte positions to flip: header metadata (a class name), first tensor byte, middle, last byte."""
    data, start = path.read_bytes(), _data_start(path)
    return {"header-metadata": data.index(b"digit1") + 5, "first-data-byte": start,
            "middle": (start + len(data)) // 2, "last-byte": len(data) - 1}


@pytest.fixture(scope="module")
def reference(digit_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", "--data", str(digit_folder), *ARGS, "--out", str(run)]) == 0
    return run


def _copy(reference: Path, tmp_path: Path) -> tuple[Path, list[Path], list[Path]]:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    ckpts = run / "checkpoints"
    weights = sorted(p for p in ckpts.glob("step-*.safetensors"))
    states = sorted(ckpts.glob("step-*.state.pt"))
    assert [p.name for p in weights] == ["step-00000006.safetensors", "step-00000008.safetensors"]
    return run, weights, states


# ----------------------------------------------------------------------- negative controls
def test_negative_control_safetensors_and_torch_accept_a_flipped_tensor_byte(reference: Path, tmp_path: Path) -> None:
    """Without vitlab's checksum, a flipped tensor byte loads silently: what the checksum is for."""
    run, weights, states = _copy(reference, tmp_path)
    before = {k: v.clone() for k, v in load_file(str(weights[-1])).items()}
    _flip(weights[-1], _positions(weights[-1])["middle"])
    after = load_file(str(weights[-1]))  # safetensors' own loader: no error
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_tensors(weights[-1])
    data = bytearray(states[-1].read_bytes())
    blob = torch.load(io.BytesIO(bytes(data)), weights_only=True)
    exp_avg = next(iter(blob["optimizer"]["state"].values()))["exp_avg"]
    raw = exp_avg.numpy().tobytes()
    at = bytes(data).index(raw[:64]) + 32  # a byte inside an optimizer moment's storage
    data[at] ^= 0x01
    states[-1].write_bytes(bytes(data))
    torch.load(states[-1], weights_only=True)  # torch's loader: no error either
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_state(states[-1], read_metadata(weights[-1])["state_checksum"])


# ----------------------------------------------------------------------- resume
@pytest.mark.parametrize("where", ["header-metadata", "first-data-byte", "middle", "last-byte"])
def test_flipped_weights_byte_resumes_from_the_previous_checkpoint(reference: Path, tmp_path: Path, where: str) -> None:
    run, weights, _ = _copy(reference, tmp_path)
    _flip(weights[-1], _positions(weights[-1])[where])
    with pytest.warns(UserWarning, match=weights[-1].name):
        assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert last_weights_equal(run, reference)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_state_byte_resumes_from_the_previous_checkpoint(reference: Path, tmp_path: Path, where: str) -> None:
    run, _, states = _copy(reference, tmp_path)
    size = states[-1].stat().st_size
    _flip(states[-1], {"first": 0, "middle": size // 2, "last": size - 1}[where])
    with pytest.warns(UserWarning, match=states[-1].name):
        assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert last_weights_equal(run, reference)


def test_every_checkpoint_corrupt_exits_4(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run, weights, _ = _copy(reference, tmp_path)
    for path in weights:
        _flip(path, _positions(path)["middle"])
    with pytest.warns(UserWarning):
        assert main(["train", "--resume", str(run), "--no-progress"]) == 4
    assert "no valid checkpoint" in capsys.readouterr().err


def test_state_from_another_save_is_refused(reference: Path, tmp_path: Path) -> None:
    """The pair check is byte-exact now: a state file swapped in from another step is caught."""
    run, weights, states = _copy(reference, tmp_path)
    blob = load_state(states[0])  # step 6's state, relabelled as step 8's: the old step check passes it
    blob["step"] = 8
    torch.save(blob, states[-1])
    with pytest.warns(UserWarning, match=states[-1].name):
        assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert last_weights_equal(run, reference)


def _strip_checksums(path: Path) -> None:
    """Rewrite a vitlab file as an older vitlab wrote it: the same tensors, no checksum entries."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k not in (CHECKSUM_KEY, STATE_KEY)}
    meta["format_version"] = "1"
    save_file(load_file(str(path)), str(path), metadata=meta)


def test_old_checkpoints_without_checksums_resume_and_load_with_a_note(reference: Path, tmp_path: Path) -> None:
    run, weights, _ = _copy(reference, tmp_path)
    for path in weights:
        _strip_checksums(path)
    assert verify_safetensors(weights[-1]) is None
    with pytest.warns(UserWarning, match="not verified"):
        assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert last_weights_equal(run, reference)
    old = tmp_path / "old.safetensors"
    shutil.copyfile(reference / "checkpoints" / "best.safetensors", old)
    _strip_checksums(old)
    with pytest.warns(UserWarning, match="no checksum") as notes:
        load_checkpoint(old)
    assert len([n for n in notes if "no checksum" in str(n.message)]) == 1


# ----------------------------------------------------------------------- load (eval / predict)
@pytest.mark.parametrize("name", ["best", "last"])
def test_eval_and_predict_refuse_a_flipped_checkpoint(reference: Path, digit_folder: Path, tmp_path: Path, name: str,
                                                      capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / f"{name}.safetensors"
    shutil.copyfile(reference / "checkpoints" / f"{name}.safetensors", path)
    assert verify_safetensors(path) is not None  # written with a checksum, which holds
    _flip(path, _positions(path)["middle"])
    capsys.readouterr()
    assert main(["eval", str(path), "--data", str(digit_folder), "--device", "cpu"]) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "checksum mismatch" in err
    image = next((digit_folder / "val" / "digit0").iterdir())
    assert main(["predict", str(path), str(image), "--device", "cpu"]) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "checksum mismatch" in err


def test_checksum_covers_header_and_data_and_is_recorded(reference: Path) -> None:
    path = reference / "checkpoints" / "step-00000008.safetensors"
    meta = read_metadata(path)
    assert meta["checksum"].startswith("sha256:") and len(meta["checksum"]) == len("sha256:") + 64
    assert meta["state_checksum"] == digest_tag(path.with_name("step-00000008.state.pt").read_bytes())
    assert verify_safetensors(path) == meta["checksum"]


# ----------------------------------------------------------------------- data fingerprint
def _train_once(digit_folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    shutil.copytree(digit_folder, data)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), *ARGS, "--epochs", "1", "--out", str(run)]) == 0
    return data, run


def _resume_error(run: Path, capsys: pytest.CaptureFixture) -> str:
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs from the data this run started with" in err
    return err


def test_resume_refuses_an_added_image(digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, run = _train_once(digit_folder, tmp_path)
    first = next((data / "train" / "digit1").iterdir())
    shutil.copyfile(first, data / "train" / "digit1" / "extra.png")
    err = _resume_error(run, capsys)
    assert "samples 36 -> 37" in err and "digit1 12 -> 13" in err


def test_resume_refuses_a_removed_image(digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, run = _train_once(digit_folder, tmp_path)
    sorted((data / "train" / "digit2").iterdir())[0].unlink()
    err = _resume_error(run, capsys)
    assert "samples 36 -> 35" in err and "digit2 12 -> 11" in err


def test_resume_refuses_a_replaced_image_of_the_same_count(digit_folder: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    data, run = _train_once(digit_folder, tmp_path)
    victim = sorted((data / "train" / "digit0").iterdir())[0]
    victim.rename(victim.with_name("renamed.png"))
    err = _resume_error(run, capsys)
    assert "files_digest: digit0" in err and "samples" not in err


def test_resume_refuses_a_renamed_class(digit_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, run = _train_once(digit_folder, tmp_path)
    for split in ("train", "val"):
        (data / split / "digit1").rename(data / split / "digitX")
    err = _resume_error(run, capsys)
    assert "missing digit1" in err and "new digitX" in err


def test_resume_with_the_same_data_continues(digit_folder: Path, tmp_path: Path) -> None:
    data, run = _train_once(digit_folder, tmp_path)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0


def test_fingerprint_changes_names_each_difference() -> None:
    saved = {"samples": 3, "classes": ["a", "b"], "images_per_class": {"a": 1, "b": 2},
             "files_digest": {"a": "x", "b": "y"}}
    assert fingerprint_changes(saved, dict(saved)) == []
    assert fingerprint_changes(saved, {**saved, "classes": ["b", "a"]}) == ["class order ['a', 'b'] -> ['b', 'a']"]
    assert fingerprint_changes(saved, {**saved, "files_digest": {"a": "x", "b": "z"}}) == ["files_digest: b"]
    assert fingerprint_changes({"samples": 3}, {"samples": 3, "new_key": 1}) == []  # older fingerprints have fewer keys


class _Coco:
    """What DetectionTask.data_fingerprint reads of a CocoDetection: images, ann_file, annotations."""

    def __init__(self, files: list[str], annotations: int) -> None:
        self.images = [{"id": i + 1, "file_name": f} for i, f in enumerate(files)]
        self.ann_file, self._raw_anns = "instances_train.json", [{}] * annotations

    def __len__(self) -> int:
        return len(self.images)


def test_detection_fingerprint_names_what_changed() -> None:
    from vitlab.tasks.detection import DetectionTask

    def fingerprint(files: list[str], annotations: int) -> dict:
        task = object.__new__(DetectionTask)  # only the data matters here, not the model or criterion
        task.train_data, task.class_names = _Coco(files, annotations), ["cat", "dog"]
        return task.data_fingerprint()

    saved = fingerprint(["a.jpg", "b.jpg"], 5)
    assert fingerprint_changes(saved, fingerprint(["a.jpg", "b.jpg"], 5)) == []
    assert fingerprint_changes(saved, fingerprint(["a.jpg", "c.jpg"], 5)) == ["images_digest changed"]
    assert fingerprint_changes(saved, fingerprint(["a.jpg", "b.jpg", "c.jpg"], 6)) == [
        "samples 2 -> 3", "images_digest changed", "annotations 5 -> 6"]


# ----------------------------------------------------------------------- downloads
class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes] = {}
    hub_sha: dict[str, str] = {}


class _Handler(http.server.BaseHTTPRequestHandler):
    """/f/NAME serves a file; /hf/NAME answers like the hub's resolve URL (302 + X-Linked-Etag)."""

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, body: bool) -> None:
        files, name = self.server.files, self.path.rsplit("/", 1)[-1]  # type: ignore[attr-defined]
        if self.path.startswith("/hf/") and name in files:
            self.send_response(302)
            self.send_header("Location", f"/f/{name}")
            self.send_header("X-Linked-Etag", f'"{self.server.hub_sha.get(name, "")}"')  # type: ignore[attr-defined]
            self.end_headers()
        elif self.path.startswith("/f/") and name in files:
            self.send_response(200)
            self.send_header("Content-Length", str(len(files[name])))
            self.end_headers()
            if body:
                self.wfile.write(files[name])
        else:
            self.send_error(404)

    def do_GET(self) -> None:
        self._reply(True)

    def do_HEAD(self) -> None:
        self._reply(False)


@pytest.fixture()
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files, srv.hub_sha = {}, {}
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: _Server, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def test_download_checks_the_pinned_sha256(server: _Server, tmp_path: Path) -> None:
    body = b"weights" * 1000
    server.files["w.pth"] = body
    good = hashlib.sha256(body).hexdigest()
    got = hub.download(_url(server, "/f/w.pth"), tmp_path / "cache" / "w.pth", good)
    assert got.read_bytes() == body
    with pytest.raises(HashMismatchError, match="differs from the expected") as info:
        hub.download(_url(server, "/f/w.pth"), tmp_path / "cache" / "bad.pth", "0" * 64)
    assert info.value.exit_code == 10
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["w.pth"]  # the bad one is gone


def test_download_checks_the_hubs_own_sha256(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "HF_ENDPOINT", _url(server, "/hf"))
    body = b"safetensors bytes" * 100
    server.files["model.safetensors"] = body
    server.hub_sha["model.safetensors"] = hashlib.sha256(body).hexdigest()
    dest = tmp_path / "cache" / "m.safetensors"
    assert hub.download("hf://org/repo/model.safetensors", dest).read_bytes() == body
    assert (tmp_path / "cache" / "m.safetensors.sha256").read_text().strip() == server.hub_sha["model.safetensors"]
    dest.write_bytes(b"bit rot" + body[7:])  # the cache is re-verified against the hub's hash, offline
    with pytest.raises(HashMismatchError, match="removed"):
        hub.download("hf://org/repo/model.safetensors", dest)
    assert not dest.exists()
    server.hub_sha["model.safetensors"] = "1" * 64  # the hub says other bytes than it serves
    with pytest.raises(HashMismatchError):
        hub.download("hf://org/repo/model.safetensors", dest)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == []
    server.hub_sha["model.safetensors"] = "not-a-sha256"
    with pytest.raises(DownloadError, match="no SHA-256"):
        hub.download("hf://org/repo/model.safetensors", dest)


def test_download_failure_is_one_line_naming_the_url_and_the_offline_way(server: _Server, tmp_path: Path) -> None:
    url = _url(server, "/f/missing.pth")
    with pytest.raises(DownloadError) as info:
        hub.download(url, tmp_path / "c" / "x.pth", "0" * 64)
    msg = str(info.value)
    assert info.value.exit_code == 11 and url in msg and "--weights FILE" in msg and "HTTP 404" in msg
    assert "\n" not in msg and list((tmp_path / "c").iterdir()) == []
    closed = f"http://127.0.0.1:{_free_port()}/w.pth"  # nothing listens: like having no network
    with pytest.raises(DownloadError, match="--weights FILE"):
        hub.download(closed, tmp_path / "c" / "y.pth", "0" * 64)


def test_unhashed_download_warns_that_it_is_not_hash_checked(server: _Server, tmp_path: Path) -> None:
    server.files["plain.npz"] = b"npz"
    with pytest.warns(UserWarning, match="not hash-checked"):
        hub.download(_url(server, "/f/plain.npz"), tmp_path / "plain.npz")


def test_cli_pretrained_offline_exits_11(tmp_path: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "HF_ENDPOINT", f"http://127.0.0.1:{_free_port()}")
    code = main(["pretrained", "vit_tiny_patch16_224", "--pretrained", "augreg_in21k_ft_in1k",
                 "--out", str(tmp_path / "ck.safetensors"), "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert code == 11 and len(err.splitlines()) == 1 and "--weights FILE" in err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_specs_document_their_check() -> None:
    """docs/weights.md names the check of every spec; none is called hash-checked that is not."""
    from vitlab.weights.specs import SPECS, hash_check

    doc = (Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text()
    for spec in SPECS:
        assert f"| `{spec.name}` | {spec.fmt} | {hash_check(spec)} |" in doc, spec.name
    assert "hash-checked)" not in doc  # the old blanket claim


def test_convert_from_a_flipped_vitlab_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`vitlab convert` reads vitlab files through the checksum too (it used to read the raw tensors)."""
    import torch

    from vitlab.api import create_model
    from vitlab.cli.main import main
    from vitlab.weights.vitlab_format import save_weights

    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    save_weights(path, create_model("vit_pico_patch7_28", num_classes=3, depth=1), ["a", "b", "c"])
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x10  # a tensor byte: safetensors' own framing stays intact
    path.write_bytes(bytes(blob))
    assert main(["convert", str(path), str(tmp_path / "o.pth"), "--to", "timm"]) == 4
    assert "checksum" in capsys.readouterr().err
    assert not (tmp_path / "o.pth").exists()


def test_a_carved_folder_split_keeps_the_file_digest(tmp_path: Path) -> None:
    """A flat folder (val carved from it) is fingerprinted by its files too, not only by counts."""
    from PIL import Image

    from vitlab.data import open_source
    from vitlab.data.seeded import SeededTransform
    from vitlab.tasks.classification import ClassificationTask

    flat = tmp_path / "flat"
    for c in ("a", "b"):
        (flat / c).mkdir(parents=True)
    for i in range(10):
        Image.new("L", (8, 8), i * 20).save(flat / ("a" if i % 2 else "b") / f"{i}.png")
    train = open_source(str(flat), "train")
    task = ClassificationTask(SeededTransform(train, None, 0), train, train.classes)
    fp = task.data_fingerprint()
    assert set(fp["files_digest"]) == {"a", "b"} and fp["images_per_class"] == {"a": 4, "b": 4}
