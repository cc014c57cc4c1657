"""``vitlab models``: every registered model with its parameters (and, on request, MACs) at its default size.

The table prints row by row as each model is built on the meta device (no memory, no init cost).
MACs take a traced forward each (~1 s for a large model), so the table shows them only with
``--macs``; ``--json`` keeps them (scripts read them) unless ``--no-macs``. Counts are cached in
``$VITLAB_CACHE/macs.json`` (default ~/.cache/vitlab), so only the first request pays.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import click


@click.command("models")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table (with MACs unless --no-macs).")
@click.option("--macs/--no-macs", default=None,
              help="Count multiply-accumulates too [default: in --json only]; cached after the first count.")
def models_cmd(pattern, as_json, macs) -> None:
    """List registered models matching PATTERN (shell-style, e.g. 'vit_base*')."""
    from vitlab.api import list_models
    from vitlab.utils.flops import MacsCache
    from vitlab.utils.progress import track

    names = list_models(pattern)
    want_macs = as_json if macs is None else macs
    cache = MacsCache() if want_macs else None
    if not as_json:
        click.echo(f"{'model':<32} {'params':>13} {'GMACs':>8}  input")
    rows = []
    # The bar only where MACs make it slow, and never over the table's own lines.
    items = track(names, "counting MACs", unit="model") if want_macs and as_json else names
    for name in items:
        row = _row(name, cache)
        rows.append(row)
        if not as_json:
            click.echo(_line(row))
    if cache is not None and (why := cache.save()):
        click.echo(f"note: MACs not cached ({why})", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    hint = "" if want_macs else "; MACs with --macs"
    click.echo(f"{len(rows)} model(s){hint}")


@contextmanager
def _skip_init() -> Iterator[None]:
    # Why: on the meta device the first trunc_normal_ pulls in torch's reference decompositions
    # (~4 s of imports) to initialise values that do not exist; the listing needs shapes only.
    # transformers' `no_init_weights` does the same. The functions are restored afterwards.
    from torch import nn

    names = ("trunc_normal_", "normal_", "zeros_", "ones_", "uniform_", "constant_", "xavier_uniform_",
             "kaiming_normal_", "kaiming_uniform_")
    saved = {n: getattr(nn.init, n) for n in names}
    for n in names:
        setattr(nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


def _row(name: str, cache) -> dict:
    import torch

    from vitlab.api import create_model
    from vitlab.utils.flops import count_params

    with torch.device("meta"), _skip_init():
        model = create_model(name)
    cfg = model.config
    row = {"name": name, "params": count_params(model), "img_size": list(cfg.img_size),
           "patch_size": cfg.patch_size, "in_chans": cfg.in_chans, "num_classes": cfg.num_classes}
    if cache is not None:
        row["macs"] = cache.macs(model, (1, cfg.in_chans, *cfg.img_size))
    return row


def _line(r: dict) -> str:
    macs = f"{r['macs'] / 1e9:8.3f}" if "macs" in r else f"{'-':>8}"
    return f"{r['name']:<32} {r['params']:>13,} {macs}  {r['in_chans']}x{r['img_size'][0]}x{r['img_size'][1]}"
