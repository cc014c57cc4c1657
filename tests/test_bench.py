"""``vitlab bench``: the statistics (known numbers), peak memory (known allocations), a tiny real run's JSON.

No timing is asserted anywhere: only how numbers are combined, and what the files hold.
"""

from __future__ import annotations

import json
import statistics
from types import SimpleNamespace

import pytest
import torch

from vitlab.bench import memory
from vitlab.bench.stats import interleave, per_round_ratios, summarize
from vitlab.cli.main import main

CPU = torch.device("cpu")


def test_ratios_are_taken_within_each_round():
    # Round 2 ran under load (both slow); per-round ratios see vitlab 2x faster every round.
    times = {"timm": [1.0, 4.0, 1.2], "vitlab": [0.5, 2.0, 0.6]}
    rows = summarize(times, items=32, reference="timm")
    assert rows["vitlab"]["ratios"] == [2.0, 2.0, 2.0]
    assert rows["vitlab"]["ratio_median"] == 2.0 and rows["timm"]["ratio_median"] == 1.0
    assert rows["vitlab"]["rate_median"] == 32 / 0.6 and rows["vitlab"]["rate_min"] == 32 / 2.0


def test_median_of_ratios_differs_from_ratio_of_medians():
    # Negative control: with these numbers the naive ratio of medians is 1.0, the per-round median 0.5,
    # so a summary that divided medians would fail here.
    ref, var = [1.0, 2.0, 4.0], [2.0, 1.0, 8.0]
    assert statistics.median(ref) / statistics.median(var) == 1.0
    row = summarize({"ref": ref, "var": var}, items=1, reference="ref")["var"]
    assert row["ratios"] == [0.5, 2.0, 0.5] and row["ratio_median"] == 0.5
    assert (row["ratio_min"], row["ratio_max"]) == (0.5, 2.0)
    with pytest.raises(ValueError, match="rounds differ"):
        per_round_ratios([1.0, 2.0], [1.0])


def test_interleave_runs_every_variant_once_per_round_after_warmup():
    order: list[str] = []

    def variant(name: str, seconds: float):
        def run() -> float:
            order.append(name)
            return seconds

        return run

    times = interleave({"a": variant("a", 1.0), "b": variant("b", 2.0)}, rounds=3, warmup=1)
    assert order == ["a", "b"] * 4  # one warm-up round, then three timed ones, never a run of one variant
    assert times == {"a": [1.0] * 3, "b": [2.0] * 3}


@pytest.mark.skipif(not memory.cpu_peak_supported(), reason="needs /proc/self/clear_refs (Linux)")
def test_step_peak_sees_a_known_allocation_and_not_an_empty_step():
    def big(_):
        t = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched, then freed before the step returns
        return float(t[-1])

    peak = memory.step_peak_mib(big, lambda: None, CPU)
    empty = memory.step_peak_mib(lambda _: None, lambda: None, CPU)
    assert 56 <= peak <= 128, peak  # the step's own allocation, whatever was resident before it
    assert empty < 16, empty  # negative control: a step that allocates nothing shows (almost) nothing


def test_quick_bench_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["bench", "--quick", "--models", "vit_pico_patch4_32", "--threads", "1", "--data", "synthetic",
               "--runtimes", "none", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((out / "bench.json").read_text())
    assert result["schema"] == "vitlab.bench/1"
    assert result["command"].startswith("vitlab bench --models vit_pico_patch4_32 --batch 2 ")
    assert {"cpu", "cpu_flags", "torch", "torch_threads", "timm"} <= set(result["machine"])
    assert set(result["ceiling"]) == {"fp32", "bf16"}
    model = result["models"]["vit_pico_patch4_32"]
    inference = model["inference"]["2"]
    assert inference["reference"] == "timm fp32" and "vitlab fp32" in inference["rows"]
    for section in (inference, model["training"]):
        ref = section["rows"][section["reference"]]["times_s"]
        for row in section["rows"].values():
            assert row["rounds"] == len(row["times_s"]) == 2
            # recomputed from the stored per-round times: reference time / row time, round by round
            assert row["ratios"] == pytest.approx([a / b for a, b in zip(ref, row["times_s"])])
            assert row["ratio_median"] == pytest.approx(statistics.median(row["ratios"]))
            assert row["gflops"] > 0
    assert all(row["step_peak_mib"] is None or row["step_peak_mib"] >= 0 for row in model["training"]["rows"].values())
    assert set(model["capture"]["cost_vs_plain"]) >= {"vitlab", "timm"}
    assert result["data"][0]["folder"].startswith("synthetic JPEGs")
    assert {"0 workers", "2 workers"} <= set(result["data"][0]["rows"])
    md = (out / "bench.md").read_text()
    assert "| vitlab fp32 |" in md and result["command"] in md and "Matrix-multiply ceiling" in md


def test_bench_restores_threads_and_refuses_bad_flags(capsys):
    before = torch.get_num_threads()
    assert main(["bench", "--sections", "ceiling", "--quick", "--threads", "1", "--rounds", "1"]) == 0
    assert torch.get_num_threads() == before
    capsys.readouterr()
    assert main(["bench", "--frameworks", "tensorflow"]) == 2
    assert "--frameworks: tensorflow" in capsys.readouterr().err
    assert main(["bench", "--sections", "speed"]) == 2
    assert main(["bench", "--models", "s,vit_nonexistent"]) == 2
    assert "--models: vit_nonexistent not registered" in capsys.readouterr().err
    assert main(["bench", "--batch", "1,x"]) == 2
    err = capsys.readouterr().err
    assert "--batch" in err and "Traceback" not in err


def test_runtime_rows_join_the_same_rounds(tmp_path, monkeypatch):
    # vitlab.runtime's public face (list_runtimes, load_runtime) faked: the real ONNX export costs
    # tens of seconds, and what is tested here is how the bench folds runtime rows into its rounds.
    import vitlab.bench.runtimes as runtimes

    built: list[tuple[str, str, int]] = []

    def load_runtime(model, runtime, precision, batch_size, device):
        built.append((runtime, precision, batch_size))
        return lambda images: model(images)

    infos = [SimpleNamespace(name="eager", available=True, reason="", precisions=("fp32",)),
             SimpleNamespace(name="fast", available=True, reason="", precisions=("fp32", "int8")),
             SimpleNamespace(name="absent", available=False, reason="absentlib not installed", precisions=())]
    monkeypatch.setattr(runtimes, "_runtime_api", lambda: (lambda: infos, load_runtime))
    rc = main(["bench", "--quick", "--models", "vit_pico_patch4_32", "--threads", "1", "--sections", "inference",
               "--frameworks", "vitlab,timm", "--out", str(tmp_path)])
    assert rc == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    rows = result["models"]["vit_pico_patch4_32"]["inference"]["2"]["rows"]
    assert set(rows) == {"vitlab fp32", "timm fp32", "fast fp32", "fast int8"}  # eager is vitlab's own row
    assert built == [("fast", "fp32", 2), ("fast", "int8", 2)]
    assert "runtime absent: absentlib not installed" in result["notes"]
    ref = rows["timm fp32"]["times_s"]
    assert rows["fast int8"]["ratios"] == pytest.approx([a / b for a, b in zip(ref, rows["fast int8"]["times_s"])])
    built.clear()
    assert main(["bench", "--quick", "--models", "vit_pico_patch4_32", "--threads", "1", "--sections", "inference",
                 "--frameworks", "vitlab", "--runtimes", "none"]) == 0
    assert built == []  # --runtimes none builds nothing


def test_auto_is_each_sections_own_measured_choice(tmp_path, monkeypatch):
    # inference's auto times a matmul, training's the model's own step; faked to disagree, so the
    # rows show each section took its own verdict (a shared one would give both sections fp32 or bf16)
    import vitlab.utils.precision as infer_check
    import vitlab.utils.train_precision as train_check

    monkeypatch.setenv("VITLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(infer_check, "measure_bf16_speedup", lambda device, width: (0.6, 0.1))
    monkeypatch.setattr(train_check, "measure_train_speedup", lambda model, shape, batch, device: 1.8)
    rc = main(["bench", "--quick", "--models", "vit_pico_patch4_32", "--threads", "1", "--sections", "inference,training",
               "--frameworks", "vitlab", "--precision", "auto", "--runtimes", "none", "--out", str(tmp_path / "b")])
    assert rc == 0
    model = json.loads((tmp_path / "b" / "bench.json").read_text())["models"]["vit_pico_patch4_32"]
    assert model["precisions"] == ["fp32"] and model["train_precisions"] == ["bf16"]
    assert set(model["inference"]["2"]["rows"]) == {"vitlab fp32"}
    assert set(model["training"]["rows"]) == {"vitlab bf16"} and model["training"]["reference"] == "vitlab bf16"
