"""The ``vitlab`` command: one click group, one module per subcommand, errors -> exit codes.

Every failure a person can act on prints one line, ``error: <what, where, what to do>``, and exits
with its code (the table is in docs/reliability.md and vitlab/errors.py). A traceback is shown
only with ``vitlab --debug ...`` or ``VITLAB_DEBUG=1``; a failure that is a bug keeps its traceback.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from vitlab import __version__
from vitlab.cli.analyze_cmd import analyze_cmd
from vitlab.cli.bench_cmd import bench_cmd
from vitlab.cli.convert_cmd import convert_cmd, resample_audit_cmd
from vitlab.cli.detect_cmd import detect_cmd
from vitlab.cli.eval_cmd import eval_cmd
from vitlab.cli.export_cmd import export_cmd, pretrained_cmd
from vitlab.cli.failures import user_error
from vitlab.cli.models_cmd import models_cmd
from vitlab.cli.predict_cmd import predict_cmd
from vitlab.cli.recipes_cmd import recipes_cmd
from vitlab.cli.report_cmd import report_cmd
from vitlab.cli.study_cmd import study_cmd
from vitlab.cli.train_cmd import train_cmd
from vitlab.errors import VitlabError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vitlab")
@click.option("--debug", is_flag=True, help="Show the traceback of an error too [env VITLAB_DEBUG=1].")
def cli(debug: bool) -> None:
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
cli.add_command(bench_cmd)
cli.add_command(recipes_cmd)


def debug_requested(args: list[str]) -> bool:
    """``--debug`` among the group's options (before the subcommand), or ``VITLAB_DEBUG`` set to 1."""
    if os.environ.get("VITLAB_DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    for arg in args:  # the group's other options (--help, --version) take no value
        if not arg.startswith("-"):
            return False
        if arg == "--debug":
            return True
    return False


def _report(err: VitlabError, cause: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(cause, file=sys.stderr)
    click.echo(f"error: {err}", err=True)
    return err.exit_code


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; user errors print one line and exit with their code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    try:
        cli.main(args=args, prog_name="vitlab", standalone_mode=False)
    except VitlabError as err:
        return _report(err, err, debug)
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
    except Exception as err:  # OS, memory and network failures; anything else is a bug and re-raised
        user = user_error(err)
        if user is None:
            raise
        return _report(user, err, debug)
    return 0


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    sys.exit(main())
