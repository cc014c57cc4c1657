"""``vitlab report``: one self-contained HTML page for a run folder or checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from vitlab.cli.analyze_cmd import analysis_options, make_options


@click.command("report")
@click.argument("target", type=click.Path())
@click.option("--images", multiple=True, help="Images to analyse (files, folders, mnist-test, ...); default: the run's "
                                              "validation data.")
@click.option("--out", type=click.Path(dir_okay=False), help="HTML file [default: RUN/report.html, or beside the checkpoint].")
@click.option("--limit", type=click.IntRange(min=1), default=16, show_default=True, help="Images analysed at most.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", default="auto", show_default=True)
@analysis_options
def report_cmd(target, images, out, limit, batch_size, device, **opts) -> None:
    """Write an HTML report for TARGET (a run folder or a .safetensors checkpoint)."""
    from vitlab.analysis.report import build_report
    from vitlab.utils.atomic import probe_writable, writing
    from vitlab.utils.device import resolve_device

    options = make_options(**opts)
    options.validate()
    path = Path(target)
    dest = Path(out) if out else (path / "report.html" if path.is_dir() else path.with_name(path.stem + ".report.html"))
    probe_writable(dest.parent, "--out")  # before the analyses run
    page = build_report(target, images, limit, options, resolve_device(device), batch_size, quiet=opts["quiet"])
    with writing(dest, "--out"):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(page, encoding="utf-8")
    click.echo(f"wrote {dest} (1 file, {dest.stat().st_size / 1e6:.1f} MB, images inline)")
