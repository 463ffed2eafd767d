"""Activation smoothing before INT8 quantization: activation outliers moved into the weights.

Dynamic INT8 quantizes each matrix product's input with one scale for the whole tensor. A BERT
encoder's layer-norm and GELU outputs carry a few channels 10-30x larger than the rest, so that
one scale leaves the other channels a handful of levels. Dividing input channel j by s_j and
multiplying the weight's row j by s_j computes the same product (SmoothQuant, Xiao et al. 2023)
while sharing the range between the activation and the weight, which INT8 quantizes per output
channel. The division is one Mul node per smoothed input; the weights are rewritten in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

# The products quantize_dynamic turns into integer ones whose input is a graph tensor and whose
# weight ([in, out] for both) is a constant.
SMOOTHED_OPS = {"MatMul", "Attention"}


def _targets(model: onnx.ModelProto) -> dict[str, list[int]]:
    """The smoothable products (their positions in the graph), grouped by the activation they read.

    Attention's own output is left alone: a softmax-weighted mean of value vectors, its channels
    are even (largest range 2-5x the median), and smoothing it brought INT8 no nearer to fp32 on
    the default bundle while its divisions cost time (benchmarks/MEASUREMENTS.md).
    """
    weights = {init.name: init for init in model.graph.initializer}
    skipped = set(weights) | {
        out for node in model.graph.node if node.op_type == "Attention" for out in node.output
    }
    groups: dict[str, list[int]] = {}
    for position, node in enumerate(model.graph.node):
        if node.op_type in SMOOTHED_OPS and len(node.input) > 1 and node.input[0] not in skipped:
            weight = weights.get(node.input[1])
            if weight is not None and len(weight.dims) == 2:
                groups.setdefault(node.input[0], []).append(position)
    return groups


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    copied = onnx.NodeProto()
    copied.CopyFrom(node)
    return copied


def activation_ranges(
    model: onnx.ModelProto, activations: Iterable[str], feeds: Iterable[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Each activation's largest magnitude per channel (its last axis) over the feeds."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = list(activations)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        taken = {k: v for k, v in feed.items() if k in inputs}  # DistilBERT takes no token_type_ids
        for name, value in zip(names, session.run(names, taken), strict=True):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def smoothing_scale(activation_peak: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """s_j = max|x_j|^alpha / max|w_j|^(1 - alpha) per input channel j, over every weight that
    reads the activation; 1 where a channel is never active or has no weight."""
    weight_peak = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    usable = (activation_peak > 0) & (weight_peak > 0)
    scale = np.ones_like(activation_peak, dtype=np.float32)
    scale[usable] = activation_peak[usable] ** alpha / weight_peak[usable] ** (1 - alpha)
    return np.clip(scale, 1e-5, 1e5).astype(np.float32)


def smooth_activations(
    fp32_path: Path, out_path: Path, feeds: Sequence[dict[str, np.ndarray]], alpha: float = 0.8
) -> Path:
    """Write ``fp32_path`` with its products' inputs smoothed; same outputs up to float rounding.

    ``feeds`` are encoded issues (``training.export.calibration_feeds``); ``alpha`` is the share
    of each channel's range moved to the weight.
    """
    if not feeds:
        raise ValueError("activation smoothing needs calibration issues (none were given)")
    model = onnx.load(str(fp32_path))
    groups = _targets(model)
    ranges = activation_ranges(model, groups, feeds) if groups else {}
    weights = {init.name: init for init in model.graph.initializer}
    nodes = [_copy(node) for node in model.graph.node]  # detached: the graph's list is rebuilt below
    first_reader = {positions[0]: tensor for tensor, positions in groups.items()}
    rebuilt: list[onnx.NodeProto] = []
    for position, node in enumerate(nodes):
        tensor = first_reader.get(position)
        if tensor is not None:
            readers = [nodes[p] for p in groups[tensor]]
            arrays = [numpy_helper.to_array(weights[r.input[1]]) for r in readers]
            scale = smoothing_scale(ranges[tensor], arrays, alpha)
            for reader, array in zip(readers, arrays, strict=True):
                smoothed = numpy_helper.from_array(
                    (array * scale[:, None]).astype(np.float32), reader.input[1]
                )
                weights[reader.input[1]].CopyFrom(smoothed)
                reader.input[0] = f"{tensor}_smoothed"
            divisor = numpy_helper.from_array(1.0 / scale, f"{tensor}_smooth_inverse")
            model.graph.initializer.append(divisor)
            rebuilt.append(
                helper.make_node(
                    "Mul", [tensor, divisor.name], [f"{tensor}_smoothed"], name=f"{tensor}_smooth"
                )
            )
        rebuilt.append(node)
    del model.graph.node[:]
    model.graph.node.extend(rebuilt)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return out_path
