"""``vitlab bench``: vitlab against timm, transformers and torchvision in one process, interleaved.

>>> from vitlab.bench import BenchOptions, run_bench, write_report
>>> result = run_bench(BenchOptions(models=("vit_tiny_patch16_224",), batches=(1,), rounds=3))
>>> write_report(result, "bench_out")  # bench.json + bench.md

Modules: :mod:`~vitlab.bench.stats` (interleaving, per-round ratios), :mod:`~vitlab.bench.peers`
(the same model in each library, same weights), :mod:`~vitlab.bench.workloads` (inference, training,
capture), :mod:`~vitlab.bench.runtimes` (vitlab.runtime's rows), :mod:`~vitlab.bench.memory`,
:mod:`~vitlab.bench.ceiling`, :mod:`~vitlab.bench.data_pipeline`, :mod:`~vitlab.bench.machine`,
:mod:`~vitlab.bench.report`, :mod:`~vitlab.bench.run` (the run itself).
"""

from vitlab.bench.report import to_markdown, write_report
from vitlab.bench.run import SCHEMA, SECTIONS, BenchOptions, run_bench

__all__ = ["SCHEMA", "SECTIONS", "BenchOptions", "run_bench", "to_markdown", "write_report"]
