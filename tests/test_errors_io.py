"""Errors a person can act on: I/O, memory and network failures give one line and their own exit code.

Full disks and read-only folders are real where the machine allows it (a tiny or read-only tmpfs
mounted by the test, a file-size limit in a subprocess); where it does not, those tests skip. A
failure in the middle of a run is injected at the OS boundary (``os.fsync`` of a checkpoint file)
or where memory is allocated (the task's step), and the run folder is then really resumed.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import socket
import textwrap
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from vitlab import errors
from vitlab.cli.main import main
from vitlab.errors import DiskFullError, NotWritableError

TINY = ["--model", "vit_pico_patch7_28", "--set", "model_args.depth=1", "--set", "model_args.embed_dim=32",
        "--set", "model_args.num_heads=2", "--set", "model_args.mlp_dim=64", "--batch-size", "8",
        "--epochs", "2", "--no-progress", "--device", "cpu", "--set", "data.eval_batch_size=16"]

# the documented table (docs/reliability.md, README): class -> exit code
TABLE = {errors.VitlabError: 1, errors.ConfigError: 2, errors.DataError: 3, errors.CheckpointError: 4,
         errors.RunDirError: 5, errors.NonFiniteError: 6, errors.DownloadError: 11, errors.DiskFullError: 12,
         errors.NotWritableError: 13, errors.OutOfMemoryError: 14}


def _last_error(capsys: pytest.CaptureFixture, *needles: str) -> str:
    """The command's error line (the last line on stderr); no traceback anywhere."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: "), err
    for needle in needles:
        assert needle in line, line
    return line


def _mount(target: Path, *options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture()
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points made by a test; all unmounted afterwards."""
    made: list[Path] = []
    yield made
    for point in reversed(made):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture()
def readonly(tmp_path: Path, mounts: list[Path]) -> Path:
    """An empty read-only folder (a read-only tmpfs: root can not write it either)."""
    point = tmp_path / "ro"
    _mount(point, "ro", "size=1m")
    mounts.append(point)
    return point


@pytest.fixture()
def tiny_disk(tmp_path: Path, mounts: list[Path]) -> Path:
    """A writable 64 KiB tmpfs: a few small files fit, a checkpoint does not."""
    point = tmp_path / "small"
    _mount(point, "size=64k")
    mounts.append(point)
    return point


# ----------------------------------------------------------------------------- the table itself
def test_exit_code_table_is_distinct_and_documented() -> None:
    from vitlab.weights.errors import HashMismatchError, MalformedFileError, UnsafePickleError

    codes = {**{c: c.exit_code for c in TABLE}, MalformedFileError: 8, UnsafePickleError: 9, HashMismatchError: 10}
    assert {c: c.exit_code for c in TABLE} == TABLE
    assert MalformedFileError.exit_code == 8 and UnsafePickleError.exit_code == 9 and HashMismatchError.exit_code == 10
    assert len(set(codes.values())) == len(codes)  # no two errors share a code
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for phrase in ("11 a failed download", "12 a full disk or file-size limit", "13 a file or folder that cannot be "
                   "written", "14 out of memory"):
        assert phrase in " ".join(readme.split()), phrase


@pytest.mark.parametrize(("code", "expected"), [(errno.ENOSPC, 12), (errno.EFBIG, 12), (errno.EDQUOT, 12),
                                                (errno.EACCES, 13), (errno.EPERM, 13), (errno.EROFS, 13),
                                                (errno.ENOENT, None), (errno.EIO, None)])
def test_write_error_maps_errnos(code: int, expected: int | None) -> None:
    mapped = errors.write_error(OSError(code, os.strerror(code)), "/runs/a/metrics.jsonl", "--out")
    assert (mapped.exit_code if mapped else None) == expected  # ENOENT / EIO: not a write problem (control)
    if mapped:
        assert "/runs/a/metrics.jsonl" in str(mapped) and "--out" in str(mapped)


# ----------------------------------------------------------------------------- real full / read-only disks
def test_atomic_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(tiny_disk: Path) -> None:
    from vitlab.utils.atomic import atomic_write

    target = tiny_disk / "weights.bin"
    atomic_write(target, lambda f: f.write(b"old"))  # fits
    with pytest.raises(DiskFullError, match="weights.bin: no space left"):
        atomic_write(target, lambda f: f.write(os.urandom(1 << 20)))
    assert target.read_bytes() == b"old"
    assert [p.name for p in tiny_disk.iterdir()] == ["weights.bin"]  # no temp file left behind


def test_atomic_write_in_a_read_only_folder(readonly: Path) -> None:
    from vitlab.utils.atomic import atomic_write

    with pytest.raises(NotWritableError, match="x.safetensors: cannot be written"):
        atomic_write(readonly / "x.safetensors", lambda f: f.write(b"1"))


def test_metrics_log_plots_and_tensorboard_name_the_file(tiny_disk: Path, mounts: list[Path]) -> None:
    from vitlab.engine.rundir import RunDir
    from vitlab.engine.tracking import TensorBoard, write_plots

    run = RunDir(tiny_disk / "run")
    run.root.mkdir()
    records = [{"kind": "train", "step": i, "loss": 1.0 / (i + 1), "lr": 0.1} for i in range(50)]
    for r in records[:3]:
        run.log(r)
    (tiny_disk / "filler").write_bytes(b"\0" * (60 << 10))  # leaves a few KiB
    with pytest.raises(DiskFullError, match="loss.png: no space left"):
        write_plots(run.metrics, run.root)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    with pytest.raises(NotWritableError, match="metrics.jsonl: cannot be written"):
        run.log(records[3])
    with pytest.raises(NotWritableError, match="tb: cannot be written"):
        TensorBoard(run.root / "tb", enabled=True).log(records[4])


def test_file_size_limit_while_saving_exits_12(tmp_path: Path) -> None:
    """A real RLIMIT_FSIZE in a subprocess (SIGXFSZ ignored so the write gets EFBIG)."""
    from vitlab.api import create_model
    from vitlab.weights.vitlab_format import save_weights

    src, dst = tmp_path / "src.safetensors", tmp_path / "out" / "dst.safetensors"
    model = create_model("vit_pico_patch7_28")
    save_weights(src, model, [str(i) for i in range(model.num_classes)])
    assert src.stat().st_size > 2 << 20
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        from vitlab.cli.main import main
        sys.exit(main(["convert", {str(src)!r}, {str(dst)!r}, "--to", "vitlab"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 12, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {dst}: the file-size limit was reached")
    assert not dst.exists() and not [p for p in dst.parent.iterdir()]  # no torn file, no temp file


# ----------------------------------------------------------------------------- checked before work starts
def test_train_refuses_a_read_only_out_before_any_work(readonly: Path, digit_folder: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    import vitlab.trainer

    def no_work(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(vitlab.trainer, "train", no_work)
    assert main(["train", "--data", str(digit_folder), *TINY, "--out", str(readonly / "run")]) == 13
    _last_error(capsys, f"--out {readonly / 'run'}", "Read-only file system", "choose another --out")
    with pytest.raises(AssertionError, match="training started"):  # control: a writable --out gets to work
        main(["train", "--data", str(digit_folder), *TINY, "--out", str(readonly.parent / "rw")])
    assert not (readonly.parent / "rw").exists()  # the probe creates nothing


def test_claim_run_dir_refuses_a_read_only_folder(readonly: Path) -> None:
    from vitlab.engine.rundir import claim_run_dir

    with pytest.raises(NotWritableError, match="--out"):
        claim_run_dir(readonly / "run", overwrite=False, resume=False)


def _garbage(tmp_path: Path) -> Path:
    bad = tmp_path / "in" / "bad.safetensors"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    return bad


@pytest.mark.parametrize("command", ["eval", "predict", "analyze", "report", "export", "convert", "pretrained",
                                     "detect-eval", "detect-predict", "study"])
def test_every_output_is_probed_before_the_input_is_read(command: str, readonly: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """The inputs are malformed (exit 8 if read): 13 shows the unwritable output was found first."""
    bad, out = str(_garbage(tmp_path)), str(readonly / "out")
    argv = {"eval": ["eval", bad, "--data", "mnist", "--out", out],
            "predict": ["predict", bad, bad, "--grid", f"{out}/grid.png"],
            "analyze": ["analyze", "rollout", "--model", bad, "--images", bad, "--out", out],
            "report": ["report", bad, "--out", f"{out}/r.html"],
            "export": ["export", bad, f"{out}/m.onnx", "--format", "onnx"],
            "convert": ["convert", bad, f"{out}/m.safetensors"],
            "pretrained": ["pretrained", "vit_pico_patch7_28", "--weights", bad, "--out", f"{out}/m.safetensors"],
            "detect-eval": ["detect", "eval", bad, "--data", "shapes", "--out", out],
            "detect-predict": ["detect", "predict", bad, bad, "--out", out],
            "study": ["study", "collapse", "--config", str(Path(__file__).resolve().parents[1] / "configs" /
                                                           "collapse_study.yaml"), "--out", out]}[command]
    assert main(argv) == 13
    _last_error(capsys, str(readonly), "cannot be written")


# eval / predict / export read checkpoints through vitlab/weights/vitlab_format.py read_metadata,
# which raises MalformedFileError (8) like the converters for a file that is not safetensors at all.
@pytest.mark.parametrize("command", ["convert", "train", "pretrained", "eval", "predict", "export"])
def test_malformed_weights_file_is_8_in_every_command(command: str, tmp_path: Path, digit_folder: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    bad = str(_garbage(tmp_path))
    argv = {"convert": ["convert", bad, str(tmp_path / "o.safetensors")],
            "eval": ["eval", bad, "--data", str(digit_folder), "--device", "cpu"],
            "predict": ["predict", bad, str(digit_folder / "val"), "--device", "cpu"],
            "train": ["train", "--data", str(digit_folder), *TINY, "--weights", bad, "--out", str(tmp_path / "run")],
            "pretrained": ["pretrained", "vit_pico_patch7_28", "--weights", bad, "--out", str(tmp_path / "p.st")],
            "export": ["export", bad, str(tmp_path / "m.onnx"), "--format", "onnx"]}[command]
    assert main(argv) == 8
    _last_error(capsys, bad)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("flags", "needle"), [
    (["--set", "model_args.std=[0.0]"], "std [0.0]"),
    (["--set", "model_args.std=[-0.5]"], "std [-0.5]"),
    (["--batch-size", "0"], "data.batch_size"),
    (["--set", "data.eval_batch_size=0"], "data.eval_batch_size"),
    (["--batch-size", "64"], "larger than the 36 training images"),
])
def test_impossible_settings_exit_2_before_the_run_folder(flags: list[str], needle: str, tmp_path: Path,
                                                          digit_folder: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["train", "--data", str(digit_folder), *TINY, *flags, "--out", str(out)]) == 2
    _last_error(capsys, needle)
    assert not out.exists()


def test_std_zero_is_refused_by_the_model_config() -> None:
    from vitlab.errors import ConfigError
    from vitlab.models.vit_config import ViTConfig

    ViTConfig(in_chans=1, mean=(0.5,), std=(0.25,)).validate()  # control: a positive std passes
    for std in ((0.0,), (float("nan"),), (-1.0,)):
        with pytest.raises(ConfigError, match="std"):
            ViTConfig(in_chans=1, mean=(0.5,), std=std).validate()


# ----------------------------------------------------------------------------- failures after the start
def _fsync_fails_on(monkeypatch: pytest.MonkeyPatch, nth: int, code: int) -> None:
    """``os.fsync`` of the ``nth`` checkpoint temp file (1-based) fails with ``code``, as a full disk would."""
    real, seen = os.fsync, [0]

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if "/checkpoints/.step-" in name and name.endswith(".tmp"):
            seen[0] += 1
            if seen[0] == nth:
                raise OSError(code, os.strerror(code))
        real(fd)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to name an fd")
    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_mid_run_says_the_run_can_be_continued_and_it_can(tmp_path: Path, digit_folder: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    # 4 steps an epoch: epoch 1's pair (weights, state) is written, epoch 2's weights fail
    _fsync_fails_on(monkeypatch, 3, errno.ENOSPC)
    assert main(["train", "--data", str(digit_folder), *TINY, "--out", str(out)]) == 12
    _last_error(capsys, f"{out}/checkpoints/step-00000008.safetensors: no space left",
                f"can be continued (from step 4) with: vitlab train --resume auto --out {out}")
    monkeypatch.undo()
    assert main(["train", "--resume", "auto", "--out", str(out), "--no-progress"]) == 0  # the claim holds


def test_disk_full_before_any_checkpoint_says_there_is_none(tmp_path: Path, digit_folder: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    _fsync_fails_on(monkeypatch, 1, errno.EDQUOT)
    assert main(["train", "--data", str(digit_folder), *TINY, "--out", str(out)]) == 12
    line = _last_error(capsys, "disk quota", f"the run folder {out} has no valid checkpoint")
    assert "--resume" not in line
    monkeypatch.undo()
    assert main(["train", "--resume", "auto", "--out", str(out), "--no-progress"]) == 5  # as said: nothing to resume


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                                   MemoryError(),
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                                                "allocate memory: you tried to allocate 99999999999 bytes")])
def test_out_of_memory_mid_run_exits_14_with_advice(error: BaseException, tmp_path: Path, digit_folder: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    from vitlab.tasks.classification import ClassificationTask

    real, calls = ClassificationTask.step, [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 7:  # in epoch 2 (4 steps an epoch): epoch 1's checkpoint exists
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ClassificationTask, "step", step)
    out = tmp_path / "run"
    assert main(["train", "--data", str(digit_folder), *TINY, "--out", str(out)]) == 14
    _last_error(capsys, "out of memory", "lower --batch-size", f"vitlab train --resume auto --out {out}")
    monkeypatch.undo()
    assert main(["train", "--resume", "auto", "--out", str(out), "--no-progress"]) == 0


def test_run_failures_names_the_command_and_passes_other_errors(tmp_path: Path) -> None:
    from vitlab.cli.failures import run_failures

    with pytest.raises(DiskFullError, match=f"{tmp_path}/run has no valid checkpoint"):
        with run_failures(tmp_path / "run", "detect train"):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "x"))
    with pytest.raises(ValueError):  # control: not a resource failure, untouched
        with run_failures(tmp_path / "run", "detect train"):
            raise ValueError("a bug")


def test_is_out_of_memory_does_not_swallow_other_runtime_errors() -> None:
    from vitlab.cli.failures import is_out_of_memory, user_error

    assert is_out_of_memory(torch.OutOfMemoryError("x")) and is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert user_error(RuntimeError("a bug")) is None  # bugs keep their traceback


def test_a_bug_still_raises(tmp_path: Path, digit_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vitlab.trainer

    def bug(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(vitlab.trainer, "train", bug)
    with pytest.raises(KeyError):
        main(["train", "--data", str(digit_folder), *TINY, "--out", str(tmp_path / "run")])


# ----------------------------------------------------------------------------- network
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No name resolves (what a machine without network sees); the download cache is empty."""
    import vitlab.weights.hub as hub

    def getaddrinfo(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(hub, "DEFAULT_CACHE", tmp_path / "cache", raising=False)
    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path / "cache"))


def test_offline_pretrained_exits_11_in_train_and_pretrained(tmp_path: Path, digit_folder: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    _offline(monkeypatch, tmp_path)
    tag = "augreg_in21k_ft_in1k"
    assert main(["pretrained", "vit_tiny_patch16_224", "--pretrained", tag, "--out", str(tmp_path / "m.safetensors"),
                 "--cache", str(tmp_path / "cache")]) == 11
    _last_error(capsys, "download failed", "name resolution", "--weights FILE")
    out = tmp_path / "run"
    assert main(["train", "--data", str(digit_folder), "--model", "vit_tiny_patch16_224", "--pretrained", tag,
                 "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--no-progress", "--out", str(out)]) == 11
    _last_error(capsys, "download failed", "--weights FILE")
    assert not out.exists()  # nothing started


# ----------------------------------------------------------------------------- --debug and the fallback
def test_traceback_only_with_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    argv = ["eval", str(tmp_path / "missing.safetensors"), "--data", "mnist"]
    code = main(argv)
    assert code == 4 and "Traceback" not in capsys.readouterr().err  # control
    assert main(["--debug", *argv]) == code
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")
    monkeypatch.setenv("VITLAB_DEBUG", "1")
    assert main(argv) == code and "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(("error", "code", "needle"), [
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/data/weights"), 1, "/data/weights: Is a directory"),
    (OSError(errno.ENOSPC, "No space left on device"), 12, "no space left"),
    (PermissionError(errno.EACCES, "Permission denied", "/srv/cache/x"), 13, "/srv/cache/x: cannot be written"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"), 14, "lower --batch-size"),
    (MemoryError(), 14, "out of memory"),
    (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), 11, "download failed"),
    (ConnectionResetError(104, "Connection reset by peer"), 11, "download failed"),
])
def test_the_fallback_maps_every_command(error: BaseException, code: int, needle: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Raised where no command translates it (here: loading the checkpoint), still one line and its code."""
    import vitlab.api

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(vitlab.api, "load_checkpoint", fails)
    assert main(["eval", str(tmp_path / "x.safetensors"), "--data", "mnist"]) == code
    _last_error(capsys, needle)
    monkeypatch.setattr(vitlab.api, "load_checkpoint", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # control: a bug keeps its traceback
        main(["eval", str(tmp_path / "x.safetensors"), "--data", "mnist"])


def test_a_real_full_disk_mid_run_then_more_space_resumes(tmp_path: Path, digit_folder: Path, mounts: list[Path],
                                                          capsys: pytest.CaptureFixture) -> None:
    """A 320 KiB tmpfs holds epoch 1 (a 165 KiB checkpoint pair, last, best, logs) but not epoch 2's pair."""
    disk = tmp_path / "disk"
    _mount(disk, "size=320k")
    mounts.append(disk)
    out = disk / "run"
    assert main(["train", "--data", str(digit_folder), *TINY, "--out", str(out)]) == 12
    line = _last_error(capsys, "no space left on the device",
                       f"can be continued (from step 4) with: vitlab train --resume auto --out {out}")
    assert "best.safetensors" in line or "step-00000008" in line, line
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp") and "last" not in p.name]
    subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)  # space freed
    assert main(["train", "--resume", "auto", "--out", str(out), "--no-progress"]) == 0
    assert (out / "checkpoints" / "step-00000008.state.pt").is_file()


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc to size the address-space limit")
def test_a_real_out_of_memory_exits_14(tmp_path: Path) -> None:
    """RLIMIT_AS 1 GiB above what the loaded libraries map; ViT-H (2.5 GB of fp32 weights) cannot be built."""
    script = textwrap.dedent(f"""
        import resource, sys
        import torch, vitlab.api, vitlab.cli.main as cli  # map the libraries before the limit
        vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
        sys.exit(cli.main(["analyze", "posembed", "--model", "vit_huge_patch14_224", "--device", "cpu",
                           "--out", {str(tmp_path / "out")!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 14, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: out of memory (")
