"""``--tta`` of ``vitlab eval`` and ``vitlab predict``: one definition, one help text, one default.

Without the flag a checkpoint is evaluated as its training run evaluated it (the ``tta`` recorded
in its ``info``), so ``vitlab eval best.safetensors`` reproduces the run's own test figure; the
choice is said on stderr whenever it is not "none".
"""

from __future__ import annotations

from typing import Any

import click

from vitlab.evaluation.tta import MODES_HELP, TTA_MODES, check_tta

TTA_OPTION = click.option(
    "--tta", type=click.Choice(list(TTA_MODES)), default=None,
    help=f"Test-time augmentation: {MODES_HELP}. Default: the checkpoint's own (its training run's tta), else none.")


def resolve_tta(flag: str | None, info: dict[str, Any]) -> str:
    """``--tta`` if given, else the checkpoint's recorded one (said on stderr), else "none"."""
    if flag is not None:
        return flag
    saved = check_tta(str(info.get("tta", "none")), "the checkpoint's info tta")
    if saved != "none":
        click.echo(f"tta {saved}: as the checkpoint's training run evaluated it (--tta none for a plain evaluation)",
                   err=True)
    return saved
