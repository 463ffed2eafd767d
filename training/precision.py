"""Mixed precision for training: when to train under bfloat16 autocast, and the plain fp32
model back afterwards (what thresholds, evaluation and the ONNX export must see)."""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedModel, Trainer

from training.machine import cpu_info

Precision = Literal["bf16", "fp32"]


def training_precision(mixed_precision: str, info: dict[str, object] | None = None) -> Precision:
    """What training runs in: ``bf16`` means under bfloat16 autocast. ``auto`` picks it only where
    AMX does the bf16 matrix products (measured 1.4x per fine-tuning step). AVX-512 BF16 alone
    (a Zen 4) was as fast, but five seeds there scored a point lower than fp32, which meets the
    time target anyway (benchmarks/MEASUREMENTS.md); without bf16 instructions it is emulated."""
    if mixed_precision != "auto":
        return "bf16" if mixed_precision == "bf16" else "fp32"
    flags = (info if info is not None else cpu_info()).get("flags") or []
    return "bf16" if "amx_bf16" in flags else "fp32"  # type: ignore[operator]


def trained_model(trainer: Trainer) -> PreTrainedModel:
    """The trainer's model without the autocast wrapper accelerate puts around its forward for
    bf16: left on, every later forward (and the ONNX trace) would run in bfloat16."""
    return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
