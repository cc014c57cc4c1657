"""``--tta`` of ``vitlab eval`` and ``vitlab predict``: one definition, one help text."""

from __future__ import annotations

import click

from vitlab.evaluation.tta import TTA_MODES

TTA_OPTION = click.option(
    "--tta", type=click.Choice(list(TTA_MODES)), default="none", show_default=True,
    help="Test-time augmentation: hflip averages each image's logits with its mirror's (photos); "
         "shift with two copies moved one pixel diagonally (digits too).")
