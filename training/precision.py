"""Mixed precision for training: when to train under bfloat16 autocast, and the plain fp32
model back afterwards (what thresholds, evaluation and the ONNX export must see)."""

from __future__ import annotations

from transformers import PreTrainedModel, Trainer

from training.machine import cpu_info


def trains_in_bf16(mixed_precision: str, info: dict[str, object] | None = None) -> bool:
    """Whether training runs under bfloat16 autocast. ``auto`` only where AMX does the bf16
    matrix products (measured 1.4x per fine-tuning step): CPUs without bf16 instructions emulate
    it, slower than fp32, and AVX-512 BF16 alone has not been measured."""
    if mixed_precision != "auto":
        return mixed_precision == "bf16"
    flags = (info if info is not None else cpu_info()).get("flags") or []
    return "amx_bf16" in flags  # type: ignore[operator]


def trained_model(trainer: Trainer) -> PreTrainedModel:
    """The trainer's model without the autocast wrapper accelerate puts around its forward for
    bf16: left on, every later forward (and the ONNX trace) would run in bfloat16."""
    return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
