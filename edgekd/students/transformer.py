"""A small Transformer encoder for token ids with an attention mask (text, event codes, ...).

Pre-norm encoder layers (Attention Is All You Need, Vaswani et al. 2017,
https://arxiv.org/abs/1706.03762; pre-norm as in Xiong et al. 2020,
https://arxiv.org/abs/2002.04745), learned positions, masked mean pooling, a linear head. Written
out in plain MatMul/Softmax/LayerNorm rather than ``nn.TransformerEncoderLayer`` so that the
legacy ONNX exporter (opset 17) sees ordinary ops and never PyTorch's fused fast path.

Inputs: ``input_ids`` (int64, ``[batch, seq]``) and, optionally, ``attention_mask`` (1 = token,
0 = padding, any numeric dtype). Data files must give them in that order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.errors import DataError
from edgekd.students import register_student

HEAD_DIM = 16  # d_model / heads; small models keep a few heads rather than one wide one


class SelfAttention(nn.Module):
    # qkv stacks three matrices row-wise; edgekd.students.teacher_init slices each on its own.
    edgekd_packed_rows = {"qkv.weight": 3, "qkv.bias": 3}

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        # Python ints, not tensor arithmetic on x.shape: the exported Reshape targets then come
        # out as constants that ONNX shape inference can follow.
        self.heads, self.head_dim, self.d_model = heads, d_model // heads, d_model
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = self.drop(((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(-1))
        return self.out((attn @ v).transpose(1, 2).reshape(b, t, self.d_model))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), bias))
        return x + self.drop(self.ff(self.norm2(x)))


def _mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.float32)
    return attention_mask.to(torch.float32)


class Encoder(nn.Module):
    """Embeddings and encoder layers: ``(input_ids, attention_mask) -> [batch, seq, d_model]``."""

    def __init__(
        self, vocab_size: int, max_len: int, d_model: int, depth: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Parameter(torch.zeros(1, max_len, d_model))
        nn.init.normal_(self.positions, std=0.02)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, heads, 2 * d_model, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        mask = _mask(input_ids, attention_mask)
        # Padding keys get a large negative score: exp() of it is 0 after the softmax. A finite
        # value (not -inf) keeps an all-padding row finite instead of NaN.
        bias = ((1.0 - mask) * -1e4)[:, None, None, :]
        # Sequences are as long as the data's (the exported graph fixes that length anyway); adding
        # the whole table, not a slice of it, keeps ONNX shape inference exact.
        x = self.tokens(input_ids) + self.positions
        for layer in self.layers:
            x = layer(x, bias)
        return self.norm(x)


class MaskedMeanHead(nn.Module):
    """Mean over the real (unmasked) tokens, then a linear classifier."""

    def __init__(self, d_model: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask[:, :, None]
        pooled = (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.fc(pooled)


class TokenTransformer(nn.Module):
    def __init__(self, features: Encoder, head: MaskedMeanHead) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.head(self.features(input_ids, attention_mask), _mask(input_ids, attention_mask))


def token_options(data: Any) -> dict[str, Any]:
    """The vocabulary size: one more than the largest token id in any split."""
    names = data.input_names
    if "input_ids" in names and names[0] != "input_ids":
        raise DataError(
            f"token data must give 'input_ids' first (then 'attention_mask'); got {list(names)}"
        )
    first = names[0]
    splits = (data.train, data.val, data.test)
    ids = [s.inputs[first] for s in splits if first in s.inputs]
    if not all(np.issubdtype(a.dtype, np.integer) for a in ids):
        raise DataError(f"input {first!r} must hold integer token ids for a token model")
    low = min(int(a.min()) for a in ids)
    if low < 0:
        raise DataError(f"input {first!r} has a negative token id ({low})")
    return {"vocab_size": max(int(a.max()) for a in ids) + 1}


@register_student(
    "transformer",
    ("tokens",),
    "Transformer encoder: width x 64 d_model, masked mean pooling",
    depths=(1, 2, 3, 4),
    options=token_options,
    default_for=("tokens",),
)
def transformer(
    sample_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    depth: int = 2,
    vocab_size: int = 1000,
    dropout: float = 0.1,
) -> nn.Module:
    # d_model a multiple of HEAD_DIM, at least one head.
    d_model = max(HEAD_DIM, HEAD_DIM * round(64 * width / HEAD_DIM))
    encoder = Encoder(vocab_size, sample_shape[0], d_model, depth, d_model // HEAD_DIM, dropout)
    return TokenTransformer(encoder, MaskedMeanHead(d_model, num_classes))
