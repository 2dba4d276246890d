"""An LM student initialised from a same-architecture teacher (``--init-from-teacher``).

DistilBERT (Sanh et al. 2019, https://arxiv.org/abs/1910.01108) started its student from the
teacher "by taking one layer out of two": same width, half the depth. Our student is Llama-style
(``edgekd.lm.student``: RMSNorm, rotary, SwiGLU, GQA), so a Llama-style ``transformers`` teacher
(``LlamaForCausalLM``, tied or untied embeddings) maps onto it weight for weight: the student
takes the teacher's width, heads, KV heads, feed-forward width, rotary base and norm epsilon, and
keeps every k-th decoder layer (layers ``i * L // n`` of the teacher's ``L``, every k-th with
k = L / n when n divides L), the embedding table (with ``--prune-vocab`` its kept rows), the
final norm and, untied, the output head's rows. Right after this the student computes exactly what
the teacher computes with the other layers removed (``tests/test_lm_init.py`` checks it against
``transformers`` itself).

Sizing (:func:`size_from_teacher`): the width is the teacher's, so only the depth is chosen, the
deepest that fits the target's ``[lm]`` lines with at most half the teacher's layers (the
DistilBERT ratio; ``edgekd.lm.pipeline.STUDENT_SHARE``). Anything else (GPT-2, a factory module,
an architecture option the student does not have, a budget that even one layer breaks) is refused
in one line (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgekd.errors import BadInputError
from edgekd.lm.student import LMStudent, LMStudentConfig

WHY = "--init-from-teacher"


@dataclass(frozen=True)
class TeacherShape:
    """What a Llama-style teacher fixes of the student, and its depth."""

    dim: int
    n_heads: int
    n_kv_heads: int
    ffn_hidden: int
    n_layers: int
    rope_theta: float
    norm_eps: float
    tie_embeddings: bool

    def student(self, n_layers: int, vocab_size: int, context: int) -> LMStudentConfig:
        return LMStudentConfig(
            vocab_size=vocab_size, dim=self.dim, n_layers=n_layers, n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads, ffn_hidden=self.ffn_hidden, context=context,
            rope_theta=self.rope_theta, norm_eps=self.norm_eps,
            tie_embeddings=self.tie_embeddings,
        )  # fmt: skip


def hf_model(teacher: Any) -> nn.Module | None:
    """The ``transformers`` model inside an ``LMTeacher`` loaded from a folder (None for a
    factory module: what it computes is not known from its weights' names)."""
    if teacher.hf_config is None:
        return None
    return getattr(teacher.module, "model", None)


def teacher_shape(teacher: Any) -> TeacherShape:
    """The shape of a Llama-style teacher; one line saying why not for any other."""
    model = hf_model(teacher)
    name = type(model).__name__ if model is not None else "a factory module"
    if model is None or name != "LlamaForCausalLM":
        kind = (teacher.hf_config or {}).get("model_type", name)
        raise BadInputError(
            f"{WHY}: the teacher ({teacher.source}) is {kind}, not Llama-style "
            "(LlamaForCausalLM: RMSNorm, rotary, SwiGLU); drop the flag to train from scratch"
        )
    c = model.config
    # transformers 5 keeps the rotary settings in rope_parameters, 4.x in rope_theta/rope_scaling
    rope = getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    theta = rope.get("rope_theta", getattr(c, "rope_theta", None))
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    problems = [
        what for what, bad in (
            (f"activation {c.hidden_act}", c.hidden_act != "silu"),
            ("attention biases", getattr(c, "attention_bias", False)),
            ("MLP biases", getattr(c, "mlp_bias", False)),
            (f"rotary scaling {rope_type}", rope_type != "default"),
            (f"head_dim {head_dim} != hidden_size / heads",
             head_dim * c.num_attention_heads != c.hidden_size),
            ("no rotary base", theta is None),
        ) if bad
    ]  # fmt: skip
    if problems:
        raise BadInputError(f"{WHY}: the Llama teacher has {', '.join(problems)}, which the "
                            "student does not; drop the flag to train from scratch")  # fmt: skip
    shape = TeacherShape(
        dim=c.hidden_size, n_heads=c.num_attention_heads, n_kv_heads=kv,
        ffn_hidden=c.intermediate_size, n_layers=c.num_hidden_layers, rope_theta=float(theta),
        norm_eps=float(c.rms_norm_eps), tie_embeddings=bool(c.tie_word_embeddings),
    )  # fmt: skip
    shape.student(1, 2, 2)  # the student's own checks (e.g. an odd head_dim) in its words
    return shape


def kept_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layers a student of ``student_layers`` keeps: ``i * L // n``.

    >>> kept_layers(12, 6), kept_layers(4, 2), kept_layers(7, 3)
    ([0, 2, 4, 6, 8, 10], [0, 2], [0, 2, 4])
    """
    if not 1 <= student_layers <= teacher_layers:
        raise BadInputError(f"{WHY}: cannot keep {student_layers} of {teacher_layers} layers")
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def size_from_teacher(shape: TeacherShape, budget, device, vocab_size: int, context: int,
                      share: int = 2, training=None):  # fmt: skip
    """The deepest student of the teacher's width with at most ``1 / share`` of its layers that
    fits every set line of ``budget`` on ``device`` and whose training ``training`` affords
    (``edgekd.lm.sizing``; when not even one layer does, one, said in the reason); refused in
    one line when even one layer breaks a line."""
    from edgekd.lm.sizing import size_lm_student

    most = max(1, shape.n_layers // share)
    context = budget.context_tokens or context
    grid = [shape.student(n, vocab_size, context) for n in range(most, 0, -1)]
    sizing = size_lm_student(budget, device, vocab_size, context, grid=grid, training=training)
    if not sizing.fits:
        broken = "; ".join(line.describe() for line in sizing.lines if not line.passed)
        raise BadInputError(
            f"{WHY}: even one layer of the teacher's width ({shape.dim}) breaks the target: "
            f"{broken}; drop the flag to size a narrower student"
        )
    return sizing


@torch.no_grad()
def init_from_teacher(student: LMStudent, teacher: Any, vocab: Any = None) -> dict[str, Any]:
    """Copy the teacher's weights into ``student`` (built from :func:`teacher_shape`'s
    ``student``): embeddings (``vocab``: only the kept rows), every kept layer, the final norm,
    the untied head. Returns what was kept, for the report."""
    model = hf_model(teacher)
    shape = teacher_shape(teacher)
    keep = kept_layers(shape.n_layers, student.config.n_layers)
    rows = None if vocab is None else torch.as_tensor(vocab.kept, dtype=torch.long)

    def copy(dst: torch.Tensor, src: torch.Tensor, by_token: bool = False) -> None:
        src = src if rows is None or not by_token else src[rows]
        if dst.shape != src.shape:  # the student was not built from this teacher's shape
            raise BadInputError(f"{WHY}: student weight {tuple(dst.shape)} does not match the "
                                f"teacher's {tuple(src.shape)}")  # fmt: skip
        dst.copy_(src)

    body = model.model
    copy(student.embed.weight, body.embed_tokens.weight, by_token=True)
    for mine, i in zip(student.layers, keep, strict=True):
        theirs = body.layers[i]
        copy(mine.attn_norm.weight, theirs.input_layernorm.weight)
        copy(mine.ffn_norm.weight, theirs.post_attention_layernorm.weight)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            copy(getattr(mine.attn, proj).weight, getattr(theirs.self_attn, proj).weight)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            copy(getattr(mine.ffn, proj).weight, getattr(theirs.mlp, proj).weight)
    copy(student.norm.weight, body.norm.weight)
    if not shape.tie_embeddings:
        copy(student.lm_head.weight, model.lm_head.weight, by_token=True)
    return {"kept_layers": keep, "teacher_layers": shape.n_layers,
            "tied_embeddings": shape.tie_embeddings,
            "vocab_rows": None if rows is None else len(rows)}  # fmt: skip
