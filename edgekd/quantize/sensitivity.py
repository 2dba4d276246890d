"""Which nodes hurt accuracy when quantized, and how many to keep in fp32 to meet a budget.

Layer-wise sensitivity analysis as in TensorRT's and Intel Neural Compressor's mixed-precision
fallback: quantize one node (or one group of consecutive nodes) at a time, everything else fp32,
and measure the damage on the evaluation split (accuracy drop first, then the mean squared logit
error to the fp32 model, which still ranks nodes when accuracy does not move). Then exclude the
most sensitive groups from quantization, one more each step, until the model fits the budget.

One-at-a-time rather than all-but-one: a tensor with an outlier range is quantized by its producer
and by its consumer, so excluding either one alone repairs nothing and all-but-one would rank both
as harmless; quantizing either one alone exposes it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.quantize import QuantConfig, quantize

# Ops whose weights or arithmetic quantization changes; the rest (Relu, pooling, reshapes) follow.
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "LSTM", "GRU")


@dataclass(frozen=True)
class Damage:
    """What quantizing a model did, measured against fp32 on the evaluation split."""

    accuracy_drop: float
    logit_mse: float

    def key(self) -> tuple[float, float]:
        return (self.accuracy_drop, self.logit_mse)


@dataclass(frozen=True)
class Sensitivity:
    nodes: tuple[str, ...]
    accuracy_drop: float
    logit_mse: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


Evaluate = Callable[[Path], Damage]


def graph_nodes(model_path: str | Path) -> list[tuple[str, str]]:
    """(name, op_type) of every node, in graph (topological) order."""
    import onnx

    return [(n.name, n.op_type) for n in onnx.load(str(model_path)).graph.node]


def node_groups(model_path: str | Path, max_groups: int) -> list[tuple[str, ...]]:
    """The compute nodes, one per group, or consecutive runs of them when there are too many."""
    compute = [name for name, op in graph_nodes(model_path) if op in COMPUTE_OPS and name]
    if not compute:
        return []
    size = math.ceil(len(compute) / max(1, max_groups))
    return [tuple(compute[i : i + size]) for i in range(0, len(compute), size)]


def rank_sensitivity(
    pre_path: Path,
    base: QuantConfig,
    calibration: dict[str, np.ndarray] | None,
    evaluate: Evaluate,
    work: Path,
    max_groups: int = 24,
) -> list[Sensitivity]:
    """Quantize each group alone (``base`` settings, all other nodes fp32); most damaging first."""
    all_nodes = [name for name, _ in graph_nodes(pre_path) if name]
    ranked = []
    for i, group in enumerate(node_groups(pre_path, max_groups)):
        keep = set(group)
        config = dataclasses.replace(
            base, nodes_to_exclude=tuple(n for n in all_nodes if n not in keep)
        )
        probe = quantize(pre_path, config, work / f"probe-{i}.onnx", calibration, preprocessed=True)
        damage = evaluate(probe)
        probe.unlink()
        ranked.append(Sensitivity(group, damage.accuracy_drop, damage.logit_mse))
    ranked.sort(key=lambda s: (s.accuracy_drop, s.logit_mse), reverse=True)
    return ranked


def exclude_until_fits(
    pre_path: Path,
    base: QuantConfig,
    calibration: dict[str, np.ndarray] | None,
    ranked: list[Sensitivity],
    evaluate: Evaluate,
    fits: Callable[[Damage], bool],
    work: Path,
) -> tuple[QuantConfig, Damage] | None:
    """Exclude the most sensitive groups, one more per step, until ``fits``; None if it never does.

    Stops before excluding every group (that model would be fp32 with extra conversions).
    """
    excluded: list[str] = list(base.nodes_to_exclude)
    for step, sens in enumerate(ranked[:-1]):
        excluded += [n for n in sens.nodes if n not in excluded]
        config = dataclasses.replace(base, nodes_to_exclude=tuple(excluded))
        path = quantize(
            pre_path, config, work / f"excl-{step}.onnx", calibration, preprocessed=True
        )
        damage = evaluate(path)
        path.unlink()
        if fits(damage):
            return config, damage
    return None
