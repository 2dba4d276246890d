"""Students for token inputs: an embedding table, a mean over the attention mask, an MLP.

The simplest strong baseline for distilling a text encoder into something tiny (a "deep averaging
network": Iyyer et al. 2015, Deep Unordered Composition Rivals Syntactic Methods for Text
Classification, https://aclanthology.org/P15-1162/). Inputs are the token ids (the integer input
whose name does not contain "mask") and, optionally, an attention mask (1 = real token).
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd.errors import BadInputError
from edgekd.students import register_student


class TokenPool(nn.Module):
    def __init__(
        self, vocab_size: int, dim: int, hidden: int, depth: int, num_classes: int, roles
    ) -> None:
        super().__init__()
        self.ids_at = roles.index("ids")
        self.mask_at = roles.index("mask") if "mask" in roles else -1
        self.embed = nn.Embedding(vocab_size, dim)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(dim if i == 0 else hidden, hidden), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(hidden if depth else dim, num_classes)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        emb = self.embed(inputs[self.ids_at].long())
        if self.mask_at >= 0:
            mask = inputs[self.mask_at].to(emb.dtype).unsqueeze(-1)
            pooled = (emb * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            pooled = emb.mean(1)
        return self.head(self.features(pooled))


def token_roles(names: list[str], dtypes: list[str]) -> tuple[str, ...]:
    """``ids`` for the integer input not named like a mask, ``mask`` for the one that is."""
    roles = []
    for name, dtype in zip(names, dtypes, strict=True):
        if "mask" in name.lower():
            roles.append("mask")
        elif dtype.startswith(("int", "uint")):
            roles.append("ids")
        else:
            roles.append("other")
    if roles.count("ids") != 1 or roles.count("mask") > 1 or "other" in roles:
        have = ", ".join(f"{n} ({d})" for n, d in zip(names, dtypes, strict=True))
        raise BadInputError(
            "the tokenpool student takes one integer token-id input and an optional attention "
            f"mask; the data has {have} (try --student concat_mlp)"
        )
    return tuple(roles)


@register_student("tokenpool", ("tokens",), "Token embedding, masked mean pool, MLP (width x 32)")
def tokenpool(
    sample_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    depth: int = 2,
    vocab_size: int = 0,
    input_names: list[str] | None = None,
    input_dtypes: list[str] | None = None,
) -> nn.Module:
    if vocab_size < 1:
        raise BadInputError("the tokenpool student needs the vocabulary size (largest id + 1)")
    names = list(input_names or ["input_ids"])
    roles = token_roles(names, list(input_dtypes or ["int64"] * len(names)))
    dim = max(8, round(32 * width))
    return TokenPool(vocab_size, dim, max(8, round(64 * width)), depth, num_classes, roles)
