"""The ``vitlab`` command: one click group, one module per subcommand."""

from __future__ import annotations

import sys

import click

from vitlab import __version__
from vitlab.cli.analyze_cmd import analyze_cmd
from vitlab.cli.convert_cmd import convert_cmd, resample_audit_cmd
from vitlab.cli.detect_cmd import detect_cmd
from vitlab.cli.eval_cmd import eval_cmd
from vitlab.cli.export_cmd import export_cmd, pretrained_cmd
from vitlab.cli.models_cmd import models_cmd
from vitlab.cli.predict_cmd import predict_cmd
from vitlab.cli.report_cmd import report_cmd
from vitlab.cli.study_cmd import study_cmd
from vitlab.cli.train_cmd import train_cmd
from vitlab.errors import VitlabError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vitlab")
def cli() -> None:
    """vitlab: train, evaluate, predict with and inspect Vision Transformers."""


cli.add_command(train_cmd)
cli.add_command(study_cmd)
cli.add_command(eval_cmd)
cli.add_command(predict_cmd)
cli.add_command(models_cmd)
cli.add_command(convert_cmd)
cli.add_command(resample_audit_cmd)
cli.add_command(detect_cmd)
cli.add_command(export_cmd)
cli.add_command(pretrained_cmd)
cli.add_command(analyze_cmd)
cli.add_command(report_cmd)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; user errors print one line and exit with their code."""
    try:
        cli.main(args=argv, prog_name="vitlab", standalone_mode=False)
    except VitlabError as err:
        click.echo(f"error: {err}", err=True)
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except SystemExit as err:  # a command asking for a specific exit code (e.g. 143 after SIGTERM)
        return int(err.code or 0)
    return 0


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    sys.exit(main())
