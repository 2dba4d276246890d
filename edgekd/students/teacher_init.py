"""Initialise a student from a larger teacher of the same family: pick layers, slice channels.

Layer selection follows DistilBERT, which initialised a 6-layer student from every other layer of
12-layer BERT (Sanh et al. 2019, https://arxiv.org/abs/1910.01108): the first unit (stem or
embedding) and the last (a final norm, where there is one) map to their own kind, the blocks
between are taken evenly spread (``"every_other"``) or from the start (``"first"``). Within a
layer, every weight gets the teacher's leading slice in every dimension (the first channels in,
the first channels out), which keeps the same channel indices along the whole network and so
through residual connections: "consistent" element selection in "Initializing Models with Larger
Ones" (Xu et al., ICLR 2024, https://arxiv.org/abs/2311.18823). Where the student is larger in
some dimension, only the overlap is copied and the rest keeps its random initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgekd.errors import BadInputError

LAYER_SELECTIONS = ("every_other", "first")
# A layer's rows that hold several stacked matrices (q, k and v in one Linear) are sliced per
# matrix, or the student's "k" rows would be the teacher's "q" rows.
PACKED_ATTR = "edgekd_packed_rows"


@dataclass(frozen=True)
class InitSummary:
    """What was copied: ``layers`` pairs student unit -> teacher unit; ``copied`` of ``total``
    student parameter elements came from the teacher."""

    layers: tuple[tuple[str, str], ...]
    copied: int
    total: int

    @property
    def share(self) -> float:
        return self.copied / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {
            "layers": [list(p) for p in self.layers],
            "copied": self.copied,
            "total": self.total,
            "share": self.share,
        }


def _units(features: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """The body as a list of layers. In a Sequential, a parameter-free child (activation,
    flatten) is skipped and a normalisation joins the layer before it; a ModuleList contributes
    each of its entries."""
    units: list[tuple[str, list[nn.Module]]] = []
    for name, child in features.named_children():
        if isinstance(child, nn.ModuleList):
            units += [(f"{name}.{i}", [m]) for i, m in enumerate(child)]
        elif not any(True for _ in child.parameters()):
            continue
        elif isinstance(child, nn.modules.batchnorm._BatchNorm | nn.LayerNorm) and units:
            if isinstance(features, nn.Sequential):
                units[-1][1].append(child)
            else:
                units.append((name, [child]))
        else:
            units.append((name, [child]))
    return units


def select_layers(n_student: int, n_teacher: int, how: str = "every_other") -> list[int]:
    """Teacher unit index for each student unit. Unit 0 maps to unit 0; with ``every_other`` the
    rest spread evenly over the teacher's remaining units (12 -> 6 gives 0, 2, 4, 6, 8, 10 as in
    DistilBERT), with ``first`` they take the next ones in order."""
    if how not in LAYER_SELECTIONS:
        raise BadInputError(f"layer selection {how!r} unknown (expected one of {LAYER_SELECTIONS})")
    if n_student == 0 or n_teacher == 0:
        return []
    rest_s, rest_t = n_student - 1, n_teacher - 1
    if rest_t == 0:
        return [0] * n_student
    if how == "first":
        return [0] + [1 + min(i, rest_t - 1) for i in range(rest_s)]
    return [0] + [
        1 + (i * rest_t) // rest_s if rest_s <= rest_t else 1 + min(i, rest_t - 1)
        for i in range(rest_s)
    ]


def _copy_leading(dst: torch.Tensor, src: torch.Tensor, packed: int = 1) -> int:
    """Copy the overlap of ``src`` into ``dst`` (leading slice in every dim); elements copied."""
    if dst.dim() != src.dim() or dst.dim() == 0:
        return 0
    if packed > 1:
        if dst.shape[0] % packed or src.shape[0] % packed:
            return 0
        dst = dst.view(packed, dst.shape[0] // packed, *dst.shape[1:])
        src = src.view(packed, src.shape[0] // packed, *src.shape[1:])
    region = tuple(slice(0, min(a, b)) for a, b in zip(dst.shape, src.shape, strict=True))
    dst[region] = src[region].to(dst.dtype)
    return dst[region].numel()


def _packed_rows(module: nn.Module) -> dict[str, int]:
    out: dict[str, int] = {}
    for prefix, m in module.named_modules():
        for name, n in getattr(m, PACKED_ATTR, {}).items():
            out[f"{prefix}.{name}" if prefix else name] = n
    return out


def _copy_module(dst: nn.Module, src: nn.Module, params: set[int]) -> int:
    src_state = src.state_dict(keep_vars=True)
    packed = _packed_rows(dst)
    copied = 0
    for name, tensor in dst.state_dict(keep_vars=True).items():
        if name not in src_state or tensor.dim() == 0:
            continue  # num_batches_tracked and the like
        n = _copy_leading(tensor.data, src_state[name].data, packed.get(name, 1))
        copied += n if id(tensor) in params else 0
    return copied


@torch.no_grad()
def init_from_teacher(
    student: nn.Module, teacher: nn.Module, layers: str = "every_other"
) -> InitSummary:
    """Overwrite ``student``'s weights with slices of ``teacher``'s (same family, in place).

    >>> student = build_student("cnn", (1, 8, 8), 10, width=0.5, depth=2)  # doctest: +SKIP
    >>> init_from_teacher(student, teacher).share  # doctest: +SKIP
    1.0
    """
    s_arch = getattr(student, "edgekd_arch", None)
    t_arch = getattr(teacher, "edgekd_arch", None)
    if s_arch is None or t_arch is None:
        raise BadInputError(
            "--init-from-teacher needs a teacher and a student from edgekd's families"
        )
    if s_arch["family"] != t_arch["family"]:
        raise BadInputError(
            f"--init-from-teacher needs the same family: the teacher is {t_arch['family']!r}, "
            f"the student {s_arch['family']!r}"
        )
    params = {id(p) for p in student.parameters()}
    s_units, t_units = _units(student.features), _units(teacher.features)
    # A trailing normalisation (a transformer's final LayerNorm) is its own kind of unit.
    s_tail = _is_tail_norm(student.features, s_units)
    t_tail = _is_tail_norm(teacher.features, t_units)
    s_body = s_units[:-1] if s_tail else s_units
    t_body = t_units[:-1] if t_tail else t_units
    chosen = select_layers(len(s_body), len(t_body), layers)
    pairs = [(s_body[i], t_body[j]) for i, j in enumerate(chosen)]
    if s_tail and t_tail:
        pairs.append((s_units[-1], t_units[-1]))
    copied = 0
    for (_, s_mods), (_, t_mods) in pairs:
        for s_mod, t_mod in zip(s_mods, t_mods, strict=False):
            copied += _copy_module(s_mod, t_mod, params)
    # Parameters held directly by the body (learned positions).
    t_direct = dict(teacher.features.named_parameters(recurse=False))
    for name, p in student.features.named_parameters(recurse=False):
        if name in t_direct:
            copied += _copy_leading(p.data, t_direct[name].data)
    copied += _copy_module(student.head, teacher.head, params)
    return InitSummary(
        layers=tuple(
            (f"features.{s_name}", f"features.{t_name}") for (s_name, _), (t_name, _) in pairs
        )
        + (("head", "head"),),
        copied=copied,
        total=sum(p.numel() for p in student.parameters()),
    )


def _is_tail_norm(features: nn.Module, units: list[tuple[str, list[nn.Module]]]) -> bool:
    return (
        not isinstance(features, nn.Sequential)
        and bool(units)
        and isinstance(units[-1][1][0], nn.LayerNorm)
    )
