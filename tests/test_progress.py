"""Progress bars: on a terminal stderr only, with a rate and an ETA; never on stdout, never in JSON."""

from __future__ import annotations

import io
import json
import re
import sys
import time

import pytest

from vitlab.utils.progress import shows, track, wrote


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_has_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    def slow():  # past tqdm's 0.1 s refresh interval, so the bar redraws with a measured rate
        for i in range(5):
            time.sleep(0.06)
            yield i

    assert list(track(slow(), "caching", total=5, unit="img")) == list(range(5))
    text = err.getvalue()
    assert "caching" in text and "/5 [" in text and re.search(r"\dimg/s", text) and re.search(r"<\d\d:\d\d", text)
    assert shows() and not shows(quiet=True)


def test_no_bar_when_quiet_or_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    assert list(track(range(3), "x", quiet=True)) == [0, 1, 2] and err.getvalue() == ""
    piped = io.StringIO()  # isatty() is False: a log file or a pipe
    monkeypatch.setattr(sys, "stderr", piped)
    assert list(track(range(3), "x")) == [0, 1, 2] and piped.getvalue() == ""


def test_data_cache_shows_a_bar(digit_folder, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitlab.data.cache import cache_folder
    from vitlab.data.folder import ImageFolderDataset

    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    cached = cache_folder(ImageFolderDataset(digit_folder / "val"))
    assert len(cached) == 18 and "caching val" in err.getvalue() and "/18 [" in err.getvalue()


def test_analyze_json_summary_and_closing_line(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from vitlab.cli.main import main

    monkeypatch.setattr(sys, "stderr", _Tty())  # bars on: they must still keep off stdout
    out = tmp_path / "an"
    assert main(["analyze", "distance", "--model", "vit_pico_patch4_28", "--images", "mnist-test", "--limit", "2",
                 "--out", str(out), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"wrote {out} (2 files: distance.png, summary.json)"]
    assert json.loads((out / "summary.json").read_text())["images"] == 2
    assert wrote("runs/x", 12) == "wrote runs/x (12 files)"
