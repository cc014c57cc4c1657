"""The bench's result as files: ``bench.json`` (everything, per-round times included) and ``bench.md`` (tables)."""

from __future__ import annotations

import json
from pathlib import Path

from vitlab.utils.atomic import atomic_write


def write_report(result: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``out/bench.json`` and ``out/bench.md`` (atomically); returns their paths."""
    folder = Path(out)
    js, md = folder / "bench.json", folder / "bench.md"
    atomic_write(js, lambda f: f.write(json.dumps(result, indent=1).encode()))
    atomic_write(md, lambda f: f.write(to_markdown(result).encode()))
    return js, md


def _machine(m: dict) -> str:
    versions = ", ".join(f"{k} {m[k]}" for k in ("torch", "timm", "transformers", "torchvision", "onnxruntime", "openvino")
                         if m.get(k))
    gpu = f", GPU {m['gpu']} (CUDA {m['cuda']})" if m.get("gpu") else ""
    load = m.get("load_average")
    end = m.get("load_average_end")
    load_s = f"; load average (1 / 5 / 15 min) {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at start" if load else ""
    load_s += f", {end[0]:.1f} / {end[1]:.1f} / {end[2]:.1f} at the end" if load and end else ""
    flags = ", ".join(m["cpu_flags"]) or "none of " + ", ".join(m["flags_checked"])
    return (f"{m['cpu']} ({m['logical_cpus']} logical CPUs; flags: {flags})"
            f"{gpu}; device {m['device']}, {m['torch_threads']} torch threads; {versions}; Python {m['python']}{load_s}")


def _ceiling_for(result: dict, row: str) -> float | None:
    ceiling = result.get("ceiling") or {}
    dtype = "bf16" if row.endswith(("bf16", "fp16")) else "fp32" if row.endswith("fp32") else None
    return ceiling.get(dtype, {}).get("gflops_median") if dtype else None


def _ratio(row: dict) -> tuple[str, str]:
    if "ratio_median" not in row:
        return "", ""
    return f"{row['ratio_median']:.2f}x", f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f}"


def _rows_table(result: dict, section: dict, training: bool) -> list[str]:
    head = ("| row | img/s (median) | img/s min-max | ms / call | x ref (median of per-round ratios) | x ref min-max "
            "| GFLOP/s | % of matmul ceiling |")
    if training:
        head += " step peak memory (MiB) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, row in section["rows"].items():
        med, span = _ratio(row)
        ceil = _ceiling_for(result, name)
        pct = f"{100 * row['gflops'] / ceil:.0f}%" if ceil else ""
        line = (f"| {name} | {row['rate_median']:.2f} | {row['rate_min']:.2f}-{row['rate_max']:.2f} | "
                f"{1000 * row['median_s']:.1f} | {med} | {span} | {row['gflops']:.1f} | {pct} |")
        if training:
            mib = row.get("step_peak_mib")
            line += f" {mib:.0f} |" if mib is not None else " not measured |"
        lines.append(line)
    return lines


def _model_md(result: dict, name: str, m: dict) -> list[str]:
    lines = [f"## {name}", "", f"{m['img_size'][0]}x{m['img_size'][1]} input, {m['macs_per_image'] / 1e9:.2f} GMACs "
             f"an image ({2 * m['macs_per_image'] / 1e9:.2f} GFLOP); precisions {', '.join(m['precisions'])}.", ""]
    lines += [f"- {fw}: {check}" for fw, check in m["checks"].items()] + [""]
    for batch, sec in (m.get("inference") or {}).items():
        lines += [f"### Inference, batch {batch} (ratios to `{sec['reference']}`, above 1 = faster)", ""]
        lines += _rows_table(result, sec, training=False) + [""]
    if m.get("training"):
        sec = m["training"]
        lines += [f"### Training (forward + backward + AdamW), batch {sec['batch']} (ratios to `{sec['reference']}`; "
                  "GFLOP/s counts 3x the forward's)", ""]
        lines += _rows_table(result, sec, training=True) + [""]
    if m.get("capture"):
        sec = m["capture"]
        lines += [f"### Attention capture of every layer, batch {sec['batch']}", "",
                  "| library | plain forward ms | forward + all maps ms | capture / plain (median of per-round ratios) "
                  "| min-max |",
                  "|---|---|---|---|---|"]
        for fw, c in sec["cost_vs_plain"].items():
            plain, cap = sec["rows"][f"{fw} plain"], sec["rows"][f"{fw} capture"]
            lines.append(f"| {fw} | {1000 * plain['median_s']:.1f} | {1000 * cap['median_s']:.1f} | {c['median']:.3f}x | "
                         f"{c['min']:.3f}-{c['max']:.3f} |")
        lines += [""] + [f"Not in this table: {fw}: {why}." for fw, why in sec.get("left_out", {}).items()] + [""]
    return lines


def _data_md(result: dict) -> list[str]:
    lines = ["## Data pipeline (decode + training augmentation)", "",
             "| images | pipeline | loader | img/s (median) | min-max | x 0 workers |", "|---|---|---|---|---|---|"]
    for d in result["data"]:
        for name, row in d["rows"].items():
            med, _ = _ratio(row)
            lines.append(f"| {d['folder']} ({d['images']}) | {d['pipeline']} | {name} | {row['rate_median']:.0f} | "
                         f"{row['rate_min']:.0f}-{row['rate_max']:.0f} | {med} |")
    train = [f"{name} {row_name} {row['rate_median']:.1f} img/s" for name, m in result["models"].items()
             for row_name, row in (m.get("training") or {}).get("rows", {}).items()]
    if train:
        lines += ["", "Training images/s in the same run, for comparison: " + "; ".join(train) + "."]
    return lines + [""]


def to_markdown(result: dict) -> str:
    """Tables of a :func:`vitlab.bench.run_bench` result."""
    opts = result["options"]
    lines = ["# vitlab bench", "", f"Command: `{result['command']}`", "", f"Machine: {_machine(result['machine'])}.", "",
             f"{opts['rounds']} interleaved rounds after {opts['warmup']} warm-up (each round times every row once; "
             "ratios are computed within each round, then their median is taken). Inputs are new random images "
             "every call. Peak memory: " + result["memory_method"] + ".", ""]
    if result.get("ceiling"):
        lines += ["## Matrix-multiply ceiling (the physical limit of this run)", "",
                  "| dtype | GFLOP/s (median) | min-max | size |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['gflops_median']:.0f} | {v['gflops_min']:.0f}-{v['gflops_max']:.0f} | {v['n']}x{v['n']} |"
                  for k, v in result["ceiling"].items()] + [""]
    for name, m in result["models"].items():
        lines += _model_md(result, name, m)
    if result.get("data"):
        lines += _data_md(result)
    if result["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)
