"""``import vitlab`` and the CLI's help load neither torch nor torchvision (~5 s on a 2-core CPU);
the lazy names still resolve, and a registry used before any model family is imported says so.

Negative control: with the eager ``vitlab/__init__`` (importing vitlab.api) or a module-level
``from vitlab.weights.formats import ...`` in a command, the torch checks below fail.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import vitlab


def _fresh(code: str) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter (nothing imported yet), cwd-independent."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [[], ["--help"], ["train", "--help"], ["eval", "--help"], ["recipes"],
                                  ["predict", "--help"]])  # convert / export --help list the format table: torch
def test_help_and_listing_do_not_import_torch(args: list[str]) -> None:
    res = _fresh("import sys\nfrom vitlab.cli.main import main\ncode = main(%r)\n"
                 "print('torch' in sys.modules, 'torchvision' in sys.modules, code)" % (args,))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] in ("False False 0", "False False 2"), res.stdout[-500:]


def test_lazy_names_resolve() -> None:
    res = _fresh("import sys, vitlab\nassert 'torch' not in sys.modules\n"
                 "print(vitlab.create_model.__module__, vitlab.data.create_transform.__name__, len(vitlab.list_models()) > 10)")
    assert res.stdout.split() == ["vitlab.api", "create_transform", "True"], res.stderr
    assert "create_model" in dir(vitlab) and vitlab.__version__
    with pytest.raises(AttributeError, match="no attribute 'not_a_part'"):
        vitlab.not_a_part  # noqa: B018


def test_an_empty_registry_says_so() -> None:
    res = _fresh("from vitlab.registry import list_models\nlist_models()")
    assert res.returncode != 0 and "no models are registered yet: import vitlab.models" in res.stderr
    res = _fresh("import vitlab.models\nfrom vitlab.registry import list_models\nprint(len(list_models()) > 10)")
    assert res.stdout.strip() == "True", res.stderr


def test_format_choices_are_read_when_the_command_runs(capsys: pytest.CaptureFixture) -> None:
    from vitlab.cli.main import main
    from vitlab.weights.formats import readable, writable

    assert main(["convert", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in readable())
    assert main(["export", "model.safetensors", "out", "--format", "nope"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in ("onnx", "torch-export", *writable()))
