"""``vitlab models``: every registered model with its parameters and MACs at its default size."""

from __future__ import annotations

import json

import click


@click.command("models")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--no-macs", is_flag=True, help="Skip counting MACs (faster).")
def models_cmd(pattern, as_json, no_macs) -> None:
    """List registered models matching PATTERN (shell-style, e.g. 'vit_base*')."""
    import torch

    from vitlab.api import create_model, list_models
    from vitlab.utils.flops import count_macs, count_params

    rows = []
    for name in list_models(pattern):
        with torch.device("meta"):  # no memory, no init cost: ViT-H lists instantly
            model = create_model(name)
        cfg = model.config
        row = {"name": name, "params": count_params(model), "img_size": list(cfg.img_size),
               "patch_size": cfg.patch_size, "in_chans": cfg.in_chans, "num_classes": cfg.num_classes}
        if not no_macs:
            row["macs"] = count_macs(model, (1, cfg.in_chans, *cfg.img_size))
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'model':<32} {'params':>13} {'GMACs':>8}  input")
    for r in rows:
        macs = f"{r['macs'] / 1e9:8.3f}" if "macs" in r else f"{'-':>8}"
        click.echo(f"{r['name']:<32} {r['params']:>13,} {macs}  {r['in_chans']}x{r['img_size'][0]}x{r['img_size'][1]}")
    click.echo(f"{len(rows)} model(s)")
