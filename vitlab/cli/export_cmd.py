"""``vitlab export``: a vitlab checkpoint as ONNX, a torch.export program, or another library's layout."""

from __future__ import annotations

import click

_FORMATS = ["onnx", "torch-export", "vitlab", "timm", "hf", "torchvision", "mindspore"]


@click.command("export")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(_FORMATS), required=True, help="What to write.")
@click.option("--opset", type=click.IntRange(min=13), default=18, show_default=True, help="ONNX opset.")
@click.option("--no-verify", is_flag=True, help="Skip running the exported graph against the model.")
def export_cmd(checkpoint, out, fmt, opset, no_verify) -> None:
    """Export CHECKPOINT (a vitlab .safetensors) to OUT (a file; a folder for hf)."""
    from vitlab.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model = ckpt.model.eval()
    if fmt == "onnx":
        from vitlab.weights.export import export_onnx

        result = export_onnx(model, out, opset=opset, verify=not no_verify)
        extra = "" if no_verify else f"; onnxruntime max abs logit difference {result['max_abs_diff']:.3e} at batch sizes {result['batches']}"
        click.echo(f"wrote {out} (ONNX opset {opset}, dynamic batch axis){extra}")
    elif fmt == "torch-export":
        from vitlab.weights.export import export_program

        result = export_program(model, out, verify=not no_verify)
        extra = "" if no_verify else f"; reloaded program max abs logit difference {result['max_abs_diff']:.3e}"
        click.echo(f"wrote {out} (torch.export program, dynamic batch axis){extra}")
    else:
        from vitlab.weights.api import export_weights

        export_weights(model, out, fmt, ckpt.class_names, info=ckpt.info)
        click.echo(f"wrote {out} ({fmt} layout)")
