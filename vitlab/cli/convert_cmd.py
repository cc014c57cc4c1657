"""``vitlab convert``: weights from one ecosystem's layout to another's, optionally verified;
``vitlab resample-audit``: how a model's logits move at a new resolution under each method."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vitlab.cli.lazy_choice import weight_formats

if TYPE_CHECKING:
    from vitlab.weights.api import Imported

# the choices come from the format table (vitlab/weights/formats.py), read when the command runs
_IN = weight_formats("read")
_OUT = weight_formats("write")
_METHODS = ["bicubic-aa", "bicubic", "bilinear", "nearest"]


def _size(value: str | None) -> tuple[int, int] | None:
    """'384' -> (384, 384); '224x320' -> (224, 320)."""
    if value is None:
        return None
    from vitlab.errors import ConfigError

    try:
        parts = [int(p) for p in value.lower().replace(",", "x").split("x")]
    except ValueError:
        raise ConfigError(f"--img-size {value!r}: expected S or HxW") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise ConfigError(f"--img-size {value!r}: expected S or HxW")
    return (parts[0], parts[1])


@click.command("convert")
@click.argument("src", type=click.Path(exists=True))
@click.argument("dst", type=click.Path())
@click.option("--from", "src_fmt", type=_IN, help="Source layout (guessed from SRC when omitted).")
@click.option("--to", "dst_fmt", type=_OUT, default="vitlab", show_default=True, help="Target layout.")
@click.option("--img-size", help="Target input size S or HxW; the position table is resampled if needed.")
@click.option("--num-classes", type=click.IntRange(min=0), help="New head with N classes (re-initialised; dropped keys logged).")
@click.option("--num-heads", type=click.IntRange(min=1),
              help="Attention heads, for files that do not record them (timm, torchvision, MindSpore state dicts).")
@click.option("--global-pool", type=click.Choice(["token", "avg"]),
              help="Pooling, for timm files with a class token and no fc_norm (token or average: the file cannot tell).")
@click.option("--norm-eps", type=click.FloatRange(min=0, min_open=True),
              help="LayerNorm eps, for files that do not record it (a timm pre-norm / CLIP state dict).")
@click.option("--no-embed-class/--embed-class", "no_embed_class", default=None,
              help="Whether the position table leaves out the class / register tokens (timm's no_embed_class), "
                   "when its length fits both.")
@click.option("--model", "model_name", help="A registered model name whose numerics / preprocessing apply.")
@click.option("--patch-size", type=click.IntRange(min=1), help="New patch size (FlexiViT pseudo-inverse kernel resize).")
@click.option("--resample", type=click.Choice(_METHODS), default="bicubic-aa", show_default=True, help="Position-table resampling.")
@click.option("--align-corners", is_flag=True, help="align_corners for bilinear / bicubic resampling.")
@click.option("--verify", is_flag=True, help="Run source and result on the same random inputs; print the largest logit difference.")
def convert_cmd(src, dst, src_fmt, dst_fmt, img_size, num_classes, num_heads, global_pool, norm_eps, no_embed_class,
                model_name, patch_size, resample, align_corners, verify) -> None:
    """Convert SRC (file or HF folder) into DST in another library's layout."""
    from vitlab.weights import surgery
    from vitlab.utils.atomic import probe_writable, writing
    from vitlab.weights.api import detect_format, export_weights, import_weights
    from vitlab.weights.published import FLAGS

    probe_writable(Path(dst).parent, "DST")  # before the source is read
    src_fmt = src_fmt or detect_format(src)
    imp = import_weights(src, src_fmt, img_size=_size(img_size), num_classes=num_classes, model_name=model_name,
                         resample=resample, align_corners=align_corners, num_heads=num_heads, global_pool=global_pool,
                         norm_eps=norm_eps, no_embed_class=no_embed_class)
    if patch_size is not None and patch_size != imp.model.patch_embed.patch_size:
        imp.info["surgery"].append(surgery.set_patch_size(imp.model, patch_size, resample))
    with writing(dst, "DST"):
        export_weights(imp.model, dst, dst_fmt, imp.class_names, info=imp.info)
    cfg = imp.model.config
    click.echo(f"{src} ({src_fmt}) -> {dst} ({dst_fmt}): depth {cfg.depth}, width {cfg.embed_dim}, heads {cfg.num_heads}, "
               f"patch {cfg.patch_size}, input {cfg.img_size[0]}x{cfg.img_size[1]}, {cfg.num_classes} classes")
    if "assumed" in imp.info:
        taken = {k: v for k, v in imp.info["assumed"].items() if k != "from"}
        click.echo(f"note: {src_fmt} files do not record {', '.join(taken)}; took "
                   f"{', '.join(f'{k}={v!r}' for k, v in taken.items())} from the published {imp.info['assumed']['from']} "
                   f"(the same shapes); pass {' / '.join(FLAGS.get(k, '--' + k.replace('_', '-')) for k in taken)} "
                   "or --model if that is wrong")
    for rec in imp.info["surgery"]:
        click.echo(f"surgery: {json.dumps(rec)}")
    if verify:
        _verify(src, dst, src_fmt, dst_fmt, imp, reset_head=num_classes is not None, patch_changed=patch_size is not None)


def _verify(src: str, dst: str, src_fmt: str, dst_fmt: str, imp: Imported, reset_head: bool, patch_changed: bool) -> None:
    """Run SRC and DST each in its own library (the format table's peers) and print how far they differ.

    The source's peer is built from what the source states (its own metadata, the flags, or a
    published architecture the conversion named), never from vitlab's guesses; a peer that can
    read the file's own description (timm hub config / metadata, HF config.json) uses that.
    """
    from vitlab.errors import VitlabError
    from vitlab.models.vit_config import ViTConfig
    from vitlab.weights.verify import compare, peer_forward

    cfg = imp.model.config
    if reset_head and any(r["op"] == "reset_classifier" for r in imp.info["surgery"]):
        click.echo("verify: skipped, the head was re-initialised")
        return
    if patch_changed:
        click.echo("verify: skipped, the patch size changed")
        return
    src_cfg = ViTConfig.from_dict(imp.info["source_config"])
    runs = []
    for fmt, path, c in ((src_fmt, src, src_cfg), (dst_fmt, dst, cfg)):
        try:
            runs.append(peer_forward(fmt, path, c))
        except (VitlabError, ImportError, RuntimeError, KeyError, ValueError) as err:
            why = (str(err).strip().splitlines() or [type(err).__name__])[0]
            click.echo(f"verify: skipped, no peer library could run {path} ({fmt}): {why}")
            return
    result = compare(runs[0], runs[1], src_cfg, cfg)
    note = " (result fed resized inputs: this measures the resampling)" if result["resized"] else ""
    click.echo(f"verify: max abs logit difference {result['max_abs_diff']:.3e}, top-1 agreement "
               f"{result['top1_agree']:.0%}{note}")


@click.command("resample-audit")
@click.argument("weights", type=click.Path(exists=True))
@click.option("--from", "src_fmt", type=_IN, help="Layout of WEIGHTS (guessed when omitted).")
@click.option("--img-size", required=True, help="New input size S or HxW.")
@click.option("--num-heads", type=click.IntRange(min=1))
@click.option("--global-pool", type=click.Choice(["token", "avg"]))
@click.option("--methods", default=",".join(_METHODS), show_default=True, help="Comma-separated methods to compare.")
@click.option("--align-corners", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def resample_audit_cmd(weights, src_fmt, img_size, num_heads, global_pool, methods, align_corners, as_json) -> None:
    """How WEIGHTS' logits change at a new resolution under each position-table resampling method."""
    from vitlab.errors import ConfigError
    from vitlab.weights.api import import_weights
    from vitlab.weights.surgery import audit_resolution

    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    bad = [m for m in chosen if m not in _METHODS]
    if bad or not chosen:
        raise ConfigError(f"--methods: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(_METHODS)}")
    imp = import_weights(weights, src_fmt, num_heads=num_heads, global_pool=global_pool)
    rows = audit_resolution(imp.model, _size(img_size), chosen, align_corners=align_corners)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    h, w = imp.model.config.img_size
    click.echo(f"{weights}: {h}x{w} -> {img_size}; logits vs the original size on the same (resized) images")
    click.echo(f"{'method':<12} {'max |dlogit|':>13} {'mean |dlogit|':>14} {'top-1 agree':>12}")
    for r in rows:
        click.echo(f"{r['method']:<12} {r['max_abs']:>13.4f} {r['mean_abs']:>14.4f} {r['top1_agree']:>12.0%}")
