"""Rows for vitlab's fast runtimes (:mod:`vitlab.runtime`: compiled torch, ONNX Runtime, OpenVINO, int8).

Each runtime is built through the package's public functions, ``list_runtimes()`` (which run here
and at which precisions) and ``load_runtime(model, runtime, precision, batch_size, device)``, on a
copy of vitlab's model (the ONNX exporters move a model to the CPU). Eager is vitlab's own row
already. A runtime that cannot run a case here is left out with its one-line reason. Building a
predictor (an ONNX export, an inductor compile) is done before the timed rounds and not timed.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Sequence

import torch
from torch import nn

from vitlab.bench.stats import Variant
from vitlab.bench.timing import random_images, timed
from vitlab.errors import VitlabError

EXTRA_PRECISIONS = ("int8",)  # offered by some runtimes whatever --precision asks for eager


def _runtime_api() -> tuple[object, object] | None:
    try:
        rt = importlib.import_module("vitlab.runtime")
    except ImportError:
        return None
    lister, builder = getattr(rt, "list_runtimes", None), getattr(rt, "load_runtime", None)
    return (lister, builder) if callable(lister) and callable(builder) else None


def runtime_variants(model: nn.Module, shape: tuple[int, int, int, int], precisions: Sequence[str],
                     device: torch.device, only: Sequence[str] | None = None) -> tuple[dict[str, Variant], list[str]]:
    """(variant per runtime and precision, notes on what was left out and why).

    Args:
        model: vitlab's model (not changed: each runtime gets a copy).
        shape: (B, C, H, W) of one call; runtimes are built for batch B.
        precisions: the bench's precisions (int8 is added where a runtime offers it).
        only: runtime names to include (None: every available one but eager).
    """
    if only is not None and not only:
        return {}, []
    api = _runtime_api()
    if api is None:
        return {}, ["vitlab.runtime is not installed here: eager rows only"]
    list_runtimes, load_runtime = api
    make = random_images(shape, device)
    variants: dict[str, Variant] = {}
    notes: list[str] = []
    for info in list_runtimes():
        if info.name == "eager" or (only is not None and info.name not in only):
            continue
        if not info.available:
            notes.append(f"runtime {info.name}: {info.reason}")
            continue
        for prec in [p for p in (*precisions, *EXTRA_PRECISIONS) if p in info.precisions]:
            try:
                predictor = load_runtime(copy.deepcopy(model).eval(), info.name, prec, shape[0], device)
            except VitlabError as err:
                notes.append(f"runtime {info.name} {prec}: {err}")
                continue
            variants[f"{info.name} {prec}"] = timed(predictor, make, device)
    return variants, notes
