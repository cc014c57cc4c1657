"""``vitlab export``: a vitlab checkpoint as ONNX, a torch.export program, or another library's layout."""

from __future__ import annotations

from pathlib import Path

import click

from vitlab.cli.lazy_choice import weight_formats

# deployable graphs, then every weight layout of the format table (vitlab/weights/formats.py)
_GRAPHS = ["onnx", "torch-export"]
_FORMATS = weight_formats("write", first=_GRAPHS)


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", type=_FORMATS, required=True, help="What to write.")
@click.option("--opset", type=click.IntRange(min=13), default=18, show_default=True, help="ONNX opset.")
@click.option("--no-verify", is_flag=True, help="Skip running the exported graph against the model.")
@click.option("--dynamic-size", is_flag=True,
              help="ONNX: free image height / width (multiples of the patch size; the position table is "
                   "interpolated inside the graph). Patch stem and learned position table only.")
def export_cmd(checkpoint, out, fmt, opset, no_verify, dynamic_size) -> None:
    """Export CHECKPOINT (a vitlab .safetensors) to OUT (a file; a folder for hf)."""
    from vitlab.api import load_checkpoint
    from vitlab.utils.atomic import probe_writable, writing

    from vitlab.errors import ConfigError

    if dynamic_size and fmt != "onnx":
        raise ConfigError(f"--dynamic-size applies to --format onnx, not {fmt}")
    probe_writable(Path(out).parent, "OUT")  # before the checkpoint is loaded
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model.eval()
    if dynamic_size:
        from vitlab.weights.onnx_dynamic import check_dynamic

        check_dynamic(model)  # one line before any tracing
    with writing(out, "OUT"):
        _export(model, ckpt, out, fmt, opset, no_verify, dynamic_size)


def _export(model, ckpt, out: str, fmt: str, opset: int, no_verify: bool, dynamic_size: bool = False) -> None:
    """Write ``model`` to ``out`` as ``fmt`` and say what was written."""
    # One step with no measurable progress inside (tracing, then the check): say it has begun, on stderr.
    check = "" if no_verify or fmt not in _GRAPHS else ", then running it against the model"
    click.echo(f"exporting {ckpt.model.__class__.__name__} as {fmt}{check} ...", err=True)
    if fmt == "onnx":
        from vitlab.weights.export import export_onnx, onnx_metadata

        meta = onnx_metadata(model, ckpt.class_names)
        result = export_onnx(model, out, opset=opset, verify=not no_verify, metadata=meta, dynamic_size=dynamic_size)
        extra = "" if no_verify else f"; onnxruntime max abs logit difference {result['max_abs_diff']:.3e} at batch sizes {result['batches']}"
        if "sizes" in result:
            extra += f" and sizes {', '.join(f'{h}x{w}' for h, w in result['sizes'])} (vs eager at those sizes)"
        axes = "dynamic batch axis and image size" if dynamic_size else "dynamic batch axis"
        click.echo(f"wrote {out} (ONNX opset {opset}, {axes}; class names and preprocessing in its metadata){extra}")
    elif fmt == "torch-export":
        from vitlab.weights.export import export_program

        result = export_program(model, out, verify=not no_verify)
        extra = "" if no_verify else f"; reloaded program max abs logit difference {result['max_abs_diff']:.3e}"
        click.echo(f"wrote {out} (torch.export program, dynamic batch axis){extra}")
    else:
        from vitlab.weights.api import export_weights

        export_weights(model, out, fmt, ckpt.class_names, info=ckpt.info)
        click.echo(f"wrote {out} ({fmt} layout)")


@click.command("pretrained")
@click.argument("model", required=False)
@click.option("--pretrained", "tag", help="Tag of a listed checkpoint: download (hash-checked) into the cache.")
@click.option("--weights", type=click.Path(exists=True), help="A local weights file or folder of any supported format (offline).")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the loaded model as a vitlab checkpoint here.")
@click.option("--num-classes", type=click.IntRange(min=0), help="New head with N classes.")
@click.option("--img-size", type=click.IntRange(min=1), help="Input size (position table resampled).")
@click.option("--cache", type=click.Path(file_okay=False), envvar="VITLAB_CACHE", help="Download cache [env VITLAB_CACHE; default ~/.cache/vitlab; hub files: the huggingface_hub cache].")
def pretrained_cmd(model, tag, weights, out, num_classes, img_size, cache) -> None:
    """List known public checkpoints (for MODEL, or all), or load one into MODEL and save it with --out.

    MODEL may also be NAME.TAG (a listed checkpoint) or a hub id (hf-hub:org/name[@rev], org/name)
    of a timm or transformers repo, fetched through huggingface_hub (HF_HUB_OFFLINE=1: cache only).
    """
    from vitlab.errors import ConfigError
    from vitlab.weights.specs import list_specs

    if tag is None and weights is None and out is None:
        specs = list_specs(model)
        defaults = {s.model: s.tag for s in reversed(list_specs())}  # a model's first spec (pretrained=True)
        click.echo(f"{'model.tag':<52} {'format':<12} {'size':>4} {'classes':>7}  license")
        for s in specs:
            mark = "  (default)" if defaults[s.model] == s.tag else ""
            click.echo(f"{s.name:<52} {s.fmt:<12} {s.img_size:>4} {s.num_classes:>7}  {s.license}{mark}")
        click.echo(f"{len(specs)} checkpoint(s); (default): what pretrained=True and MODEL --out without a tag load")
        return
    if model is None or out is None:
        raise ConfigError("loading weights needs MODEL and --out")
    from vitlab.utils.atomic import probe_writable

    probe_writable(Path(out).parent, "--out")  # before anything is downloaded
    from vitlab.weights.vitlab_format import save_weights

    overrides = {k: v for k, v in (("num_classes", num_classes), ("img_size", img_size)) if v is not None}
    net, what = _load_pretrained(model, tag, weights, cache, overrides)
    info = dict(getattr(net, "weights_info", None) or {})
    info["pretrained_cfg"] = {k: list(v) if isinstance(v, tuple) else v for k, v in net.pretrained_cfg.items()}
    save_weights(out, net, net.class_names, info=info)
    click.echo(f"wrote {out}: {what}")


def _load_pretrained(model: str, tag: str | None, weights: str | None, cache: str | None, overrides: dict):
    """(model with class_names / weights_info / pretrained_cfg, a description of what was loaded)."""
    from vitlab.api import create_model, from_hub, name_and_tag
    from vitlab.weights import hub
    from vitlab.weights.hfhub import parse_hub_id

    hub_id = parse_hub_id(model) if "/" in model else None
    if hub_id is not None:
        if tag is not None or weights is not None:
            from vitlab.errors import ConfigError

            raise ConfigError(f"{model} is a hub id: it names its weights (no --pretrained / --weights)")
        return from_hub(*hub_id, cache_dir=cache, **overrides), f"{model} (via huggingface_hub)"
    name, tag = name_and_tag(model, tag if tag is not None else (None if weights else True))
    if tag is not None:
        overrides = {**hub.pretrained_overrides(name, tag), **overrides}
    net = create_model(name, **overrides)
    hub.load_weights_into(net, name, pretrained=tag, weights=weights, cache_dir=cache)
    return net, f"{name} with {'pretrained ' + tag if tag else weights}"
