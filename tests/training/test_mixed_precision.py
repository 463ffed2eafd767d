"""bfloat16 training: chosen by the CPU (auto) or by the config, and fp32 weights either way."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests.conftest import SHARED_DATA
from tests.training.test_refresh import TINY
from training.adapt import adapt_encoder
from training.config import PACKAGED_MODEL, TrainingConfig, resolve_base_model
from training.export import export_onnx
from training.finetune import FineTuneResult, finetune, predict_probabilities
from training.machine import cpu_info
from training.precision import training_precision

SHORT = TINY.model_copy(update={"mlm_max_steps": 2, "mlm_head_warmup_steps": 1, "max_steps": 2})


def _cpuinfo(tmp_path: Path, flags: str) -> dict[str, object]:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\ncpu family\t: 6\nflags\t\t: {flags}\n")
    return cpu_info(path)


def test_auto_uses_bf16_only_where_amx_does_the_bf16_products(tmp_path: Path) -> None:
    amx = _cpuinfo(tmp_path, "fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8")
    avx512_bf16 = _cpuinfo(tmp_path, "fpu avx2 avx512f avx512_bf16")
    plain = _cpuinfo(tmp_path, "fpu avx2")
    assert training_precision("auto", amx) == "bf16"
    assert training_precision("auto", avx512_bf16) == "fp32"
    assert training_precision("auto", plain) == "fp32"
    assert training_precision("bf16", plain) == "bf16"
    assert training_precision("fp32", amx) == "fp32"


@contextmanager
def _autocast_seen() -> Iterator[set[tuple[bool, bool]]]:
    """(in training mode, under CPU autocast) of every Linear layer's forward pass meanwhile (an
    outer module's hooks run outside the autocast that wraps its forward)."""
    seen: set[tuple[bool, bool]] = set()

    def hook(module: torch.nn.Module, _args: object, _output: object) -> None:
        if isinstance(module, torch.nn.Linear):
            seen.add((module.training, torch.is_autocast_enabled("cpu")))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def titles() -> list[str]:
    source = SHARED_DATA / "sklearn_surya" / "issues.jsonl"
    if not source.is_file():
        pytest.fail(f"the shared issue data is missing: {source}", pytrace=False)
    return [json.loads(line)["title"] for line in source.read_text().splitlines()[:24]]


def finetune_even_odd(
    encoder: Path, titles: list[str], workdir: Path, config: TrainingConfig
) -> FineTuneResult:
    """A two-label fine-tune of ``encoder`` on the titles (labels alternate), validated on the first 8."""
    targets = np.array([[i % 2, 1 - i % 2] for i in range(len(titles))], dtype=np.float32)
    return finetune(
        str(encoder),
        resolve_base_model(PACKAGED_MODEL),
        ["even", "odd"],
        (titles, targets),
        (titles[:8], targets[:8]),
        workdir,
        config,
    )


@pytest.mark.parametrize("mode", ["bf16", "fp32"])
def test_adapting_and_fine_tuning_run_under_the_chosen_precision(
    mode: str, titles: list[str], tmp_path: Path
) -> None:
    config = SHORT.model_copy(update={"mixed_precision": mode})
    base = resolve_base_model(PACKAGED_MODEL)
    with _autocast_seen() as adapting:
        adapted = adapt_encoder(titles, base, tmp_path / "encoder", config)
    with _autocast_seen() as tuning:
        tuned = finetune_even_odd(adapted.encoder_dir, titles, tmp_path / "ckpt", config)
    bf16 = mode == "bf16"
    # training under the chosen precision; the held-out MLM loss and validation in between are
    # the trainer's and the adapter's own evaluation passes
    assert (True, bf16) in adapting and (True, not bf16) not in adapting
    assert (True, bf16) in tuning and (True, not bf16) not in tuning
    assert np.isfinite(adapted.held_out_loss_after)
    # the model handed on is plain fp32: predictions and the ONNX trace run without autocast
    assert {p.dtype for p in tuned.model.parameters()} == {torch.float32}
    with _autocast_seen() as predicting:
        probabilities = predict_probabilities(tuned.model, tuned.tokenizer, titles[:4], max_length=32)
    assert predicting == {(False, False)}
    path = export_onnx(tuned.model, tuned.tokenizer, tmp_path / "model.onnx")
    assert {t.data_type for t in onnx.load(path).graph.initializer} <= {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.INT64,
    }
    assert probabilities.shape == (4, 2)
