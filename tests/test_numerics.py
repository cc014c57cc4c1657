"""NaN / inf never becomes a reported figure: eval and validation refuse, naming the cause."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset, DataLoader

from vitlab.api import create_model
from vitlab.cli.main import main
from vitlab.errors import DataError, NonFiniteError
from vitlab.evaluation.inference import predict_logits
from vitlab.weights.vitlab_format import save_weights


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("vit_pico_patch7_28", num_classes=3, depth=1, embed_dim=32, num_heads=2, mlp_dim=64)


def test_nan_input_is_a_data_error_naming_the_rows() -> None:
    images = torch.rand(4, 1, 28, 28)
    images[2, 0, 5, 5] = float("nan")
    loader = DataLoader(TensorDataset(images, torch.zeros(4, dtype=torch.long)), batch_size=4)
    with pytest.raises(DataError, match=r"rows \[2\]"):
        predict_logits(_model(), loader, torch.device("cpu"), "fp32")


def test_finite_input_clean_model_passes() -> None:  # the control: the check does not fire on good data
    loader = DataLoader(TensorDataset(torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)), batch_size=4)
    logits, _ = predict_logits(_model(), loader, torch.device("cpu"), "fp32")
    assert torch.isfinite(logits).all()


def test_eval_of_inf_weights_exits_6_with_one_line(digit_folder: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    model = _model()
    with torch.no_grad():
        model.head.weight.fill_(float("inf"))
    ckpt = tmp_path / "broken.safetensors"
    save_weights(ckpt, model, ["digit0", "digit1", "digit2"])
    code = main(["eval", str(ckpt), "--data", str(digit_folder), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == NonFiniteError.exit_code and err.count("\n") == 0 and "NaN or inf logits" in err
