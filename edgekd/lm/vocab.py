"""``--prune-vocab``: a student that keeps only the tokens the corpus uses.

In a small LM most parameters sit in the embedding table (a 49,152-token vocabulary at width 256
is 12.6M parameters, more than a 6-layer body of that width), and a corpus for one device's task
uses a fraction of a general tokenizer's tokens. The student is trained over the kept tokens
only (``pruned`` ids 0..K-1, in the order of the original ids); the teacher is seen through the
same map (:class:`PrunedTeacher`: its distribution restricted to the kept tokens and
renormalized, the mass on tokens the corpus never uses dropped). The exported model maps ids
back (:class:`PrunedLM`): it reads the user's tokenizer's ids and returns logits over the whole
original vocabulary, with a large negative logit for the tokens it never learnt, so the user's
tokenizer still works unchanged. An id outside the kept set at inference is read as the
end-of-text token (the student has never seen it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgekd.errors import BadInputError

# The logit of a token the pruned student cannot produce: softmax gives it ~exp(-1e4) = 0, and
# it stays finite (no NaN in a log-softmax or a KL term).
NEVER = -1e4


@dataclass(frozen=True)
class VocabMap:
    """The kept original ids (sorted, unique) of a vocabulary of ``full_size`` tokens."""

    kept: np.ndarray
    full_size: int
    eos_id: int

    def __post_init__(self) -> None:
        kept = np.asarray(self.kept, dtype=np.int64)
        if kept.ndim != 1 or len(kept) == 0 or np.any(np.diff(kept) <= 0):
            raise BadInputError("the kept token ids must be a non-empty sorted list of unique ids")
        if kept[0] < 0 or kept[-1] >= self.full_size or self.eos_id not in set(kept.tolist()):
            raise BadInputError(
                f"kept token ids must lie in [0, {self.full_size}) and include the end-of-text "
                f"id {self.eos_id}"
            )
        object.__setattr__(self, "kept", kept)

    @classmethod
    def from_blocks(cls, blocks: Iterable[np.ndarray], full_size: int, eos_id: int) -> VocabMap:
        """The tokens used anywhere in ``blocks`` (and the end-of-text token).

        >>> VocabMap.from_blocks([np.array([[5, 2, 5]])], 8, eos_id=0).kept.tolist()
        [0, 2, 5]
        """
        used = np.unique(np.concatenate([np.unique(b) for b in blocks] + [[eos_id]]))
        return cls(used.astype(np.int64), full_size, eos_id)

    @property
    def size(self) -> int:
        return len(self.kept)

    def table(self) -> np.ndarray:
        """[full_size]: original id -> pruned id (tokens not kept -> the end-of-text's)."""
        out = np.full(self.full_size, int(np.searchsorted(self.kept, self.eos_id)), np.int64)
        out[self.kept] = np.arange(self.size)
        return out

    def to_pruned(self, ids: np.ndarray) -> np.ndarray:
        return self.table()[np.asarray(ids, dtype=np.int64)]

    def to_full(self, ids: np.ndarray) -> np.ndarray:
        return self.kept[np.asarray(ids, dtype=np.int64)]

    def to_dict(self) -> dict:
        return {"full_size": self.full_size, "eos_id": self.eos_id, "kept": self.kept.tolist()}


class PrunedTeacher(nn.Module):
    """The teacher in pruned ids: reads pruned ids, returns logits over the kept tokens only
    (a softmax over them is the teacher's distribution restricted and renormalized)."""

    def __init__(self, teacher: nn.Module, vocab: VocabMap) -> None:
        super().__init__()
        self.teacher = teacher
        self.register_buffer("kept", torch.from_numpy(vocab.kept), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits = self.teacher(self.kept[input_ids])
        return logits.index_select(-1, self.kept)


class PrunedLM(nn.Module):
    """A student over the kept tokens behind the original ids: ``input_ids`` (original) ->
    logits over the original vocabulary. Keeps the student's forward contract (KV cache) and its
    ``config`` (the export reads the cache layout from it)."""

    def __init__(self, student: nn.Module, vocab: VocabMap) -> None:
        super().__init__()
        self.student = student
        self.config = student.config
        self.register_buffer("to_pruned", torch.from_numpy(vocab.table()), persistent=False)
        back = np.full(vocab.full_size, vocab.size, np.int64)  # the NEVER column by default
        back[vocab.kept] = np.arange(vocab.size)
        self.register_buffer("back", torch.from_numpy(back), persistent=False)

    def forward(self, input_ids: torch.Tensor, past_key_values=None, use_cache: bool = False):
        out = self.student(self.to_pruned[input_ids], past_key_values=past_key_values,
                           use_cache=use_cache)  # fmt: skip
        logits, present = out if use_cache else (out, None)
        never = torch.full_like(logits[..., :1], NEVER)
        full = torch.cat([logits, never], dim=-1).index_select(-1, self.back)
        return (full, present) if use_cache else full
