"""The language-model student family: a small decoder-only transformer in the Llama mould.

RMSNorm (Zhang & Sennrich 2019, https://arxiv.org/abs/1910.07467), rotary positions (Su et al.
2021, https://arxiv.org/abs/2104.09864), SwiGLU feed-forward (Shazeer 2020,
https://arxiv.org/abs/2002.05202), tied input/output embeddings (Press & Wolf 2017), and optional
grouped-query attention (Ainslie et al. 2023, https://arxiv.org/abs/2305.13245) when
``n_kv_heads < n_heads``: the KV cache, which dominates memory at long contexts, shrinks by
``n_heads / n_kv_heads``.

The cache is a tuple with one ``(key, value)`` pair per layer, each ``[B, n_kv_heads, T, head_dim]``
(the layout ``transformers`` uses), so the same code path serves training (no cache), greedy
decoding and the ONNX export (``edgekd/lm/export.py``). A checkpoint is a folder holding
``model.safetensors`` and ``config.json``: no pickle anywhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.errors import BadInputError

KVCache = tuple[tuple[torch.Tensor, torch.Tensor], ...]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# Written into config.json so a folder is recognised as ours (and not a transformers checkpoint).
FORMAT = "edgekd-lm-student/1"


@dataclass(frozen=True)
class LMStudentConfig:
    """Architecture of one student: every knob the sizing search turns, checked on creation.

    >>> LMStudentConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
    ...                 ffn_hidden=172, context=128).head_dim
    16
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_hidden: int
    context: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden",
                     "context"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInputError(f"LM student {name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads:
            raise BadInputError(
                f"LM student dim {self.dim} is not divisible by n_heads {self.n_heads}"
            )
        if self.n_heads % self.n_kv_heads:
            raise BadInputError(
                f"LM student n_heads {self.n_heads} is not a multiple of n_kv_heads "
                f"{self.n_kv_heads} (grouped-query attention shares each KV head between "
                "equal groups)"
            )
        if self.head_dim % 2:
            raise BadInputError(
                f"LM student head_dim {self.head_dim} (dim / n_heads) must be even for rotary "
                "positions"
            )
        if not (self.rope_theta > 0 and math.isfinite(self.rope_theta)):
            raise BadInputError(f"LM student rope_theta must be positive, got {self.rope_theta}")
        if not (0 < self.norm_eps < 1):
            raise BadInputError(f"LM student norm_eps must be in (0, 1), got {self.norm_eps}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        """Width of one layer's key (or value) projection: ``n_kv_heads * head_dim``."""
        return self.n_kv_heads * self.head_dim

    def param_count(self) -> int:
        """Number of parameters, counted by hand (tests check it against the built module)."""
        attention = 2 * self.dim * self.dim + 2 * self.dim * self.kv_dim  # q, o; k, v
        ffn = 3 * self.dim * self.ffn_hidden  # gate, up, down
        per_layer = attention + ffn + 2 * self.dim  # two RMSNorm gains
        embeddings = self.vocab_size * self.dim * (1 if self.tie_embeddings else 2)
        return embeddings + self.n_layers * per_layer + self.dim  # + the final norm

    def kv_cache_bytes(self, tokens: int, batch: int = 1, bytes_per_value: int = 4) -> int:
        """Bytes of the KV cache holding ``tokens`` positions: keys and values of every layer."""
        return 2 * self.n_layers * batch * tokens * self.kv_dim * bytes_per_value

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> LMStudentConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInputError(f"{where}: unknown LM student field(s) {', '.join(unknown)}")
        missing = sorted(f.name for f in fields(cls) if f.name not in data and f.default is MISSING)
        if missing:
            raise BadInputError(f"{where}: missing LM student field(s) {', '.join(missing)}")
        return cls(**data)


class RMSNorm(nn.Module):
    """x / rms(x) * gain, computed in float32 for stability under autocast."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.float()).to(x.dtype)


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor,
                                                                                 torch.Tensor]:
    """cos and sin, each ``[T, head_dim]``, for integer ``positions`` ``[T]`` (the half-split
    layout Llama uses: dimension i pairs with i + head_dim / 2)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: LMStudentConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.n_heads, config.n_kv_heads, config.head_dim)
        self.q_proj = nn.Linear(config.dim, config.dim, bias=False)
        self.k_proj = nn.Linear(config.dim, config.kv_dim, bias=False)
        self.v_proj = nn.Linear(config.dim, config.kv_dim, bias=False)
        self.o_proj = nn.Linear(config.dim, config.dim, bias=False)

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, n, self.head_dim).transpose(1, 2)

    def _repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        # expand + reshape rather than repeat_interleave: the same result, and a plain
        # Expand/Reshape in ONNX.
        rep = self.n_heads // self.n_kv_heads
        if rep == 1:
            return x
        b, h, t, d = x.shape
        return x[:, :, None].expand(b, h, rep, t, d).reshape(b, h * rep, t, d)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple]:
        q = apply_rotary(self._heads(self.q_proj(x), self.n_heads), cos, sin)
        k = apply_rotary(self._heads(self.k_proj(x), self.n_kv_heads), cos, sin)
        v = self._heads(self.v_proj(x), self.n_kv_heads)
        if past is not None:
            k = torch.cat([past[0].to(k.dtype), k], dim=2)
            v = torch.cat([past[1].to(v.dtype), v], dim=2)
        scores = q @ self._repeat_kv(k).transpose(-1, -2) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(mask, float("-inf"))
        out = F.softmax(scores.float(), dim=-1).to(q.dtype) @ self._repeat_kv(v)
        b, _, t, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1)), (k, v)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: LMStudentConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = Attention(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn = SwiGLU(config.dim, config.ffn_hidden)

    def forward(self, x, cos, sin, mask, past):
        attended, present = self.attn(self.attn_norm(x), cos, sin, mask, past)
        x = x + attended
        return x + self.ffn(self.ffn_norm(x)), present


class LMStudent(nn.Module):
    """A decoder-only LM: ``input_ids [B, T]`` -> ``logits [B, T, V]``.

    >>> cfg = LMStudentConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
    ...                       ffn_hidden=64, context=16)
    >>> LMStudent(cfg)(torch.zeros(1, 5, dtype=torch.long)).shape
    torch.Size([1, 5, 64])
    """

    def __init__(self, config: LMStudentConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections: keeps the residual stream's variance
        # from growing with depth.
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor, past_key_values: KVCache | None = None,
                use_cache: bool = False) -> torch.Tensor | tuple[torch.Tensor, KVCache]:
        """``input_ids [B, T]`` int64 -> logits ``[B, T, V]``; with ``use_cache`` also the new
        per-layer ``(key, value)`` cache (past positions followed by these ``T``)."""
        x, presents = self._trunk(input_ids, past_key_values)
        # The output projection on [B*T, dim]: the same numbers, and a 2-D MatMul that the LM
        # export turns into a Gemm reading the tied table as stored (edgekd.lm.export), so the
        # file keeps the table once.
        b, t = input_ids.shape
        logits = self.lm_head(self.norm(x).reshape(-1, self.config.dim)).reshape(b, t, -1)
        return (logits, presents) if use_cache else logits

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The final norm's output ``[B, T, dim]``, what ``lm_head`` maps to logits: training
        computes the logits and the loss from it a chunk of tokens at a time
        (``edgekd.lm.head``)."""
        return self.norm(self._trunk(input_ids, None)[0])

    def _trunk(self, input_ids: torch.Tensor, past_key_values: KVCache | None
               ) -> tuple[torch.Tensor, KVCache]:  # fmt: skip
        """The layers' output before the final norm, and the new cache."""
        if input_ids.dim() != 2:
            raise BadInputError(f"LM student input_ids must be [batch, tokens], got shape "
                                f"{tuple(input_ids.shape)}")
        t = input_ids.shape[1]
        past_len = past_key_values[0][0].shape[2] if past_key_values else 0
        positions = torch.arange(t, device=input_ids.device) + past_len
        cos, sin = rotary_tables(positions, self.config.head_dim, self.config.rope_theta)
        cos, sin = cos.to(input_ids.device), sin.to(input_ids.device)
        keys = torch.arange(t + past_len, device=input_ids.device)
        mask = keys[None, :] > positions[:, None]  # True where a query may not look
        x = self.embed(input_ids)
        presents = []
        for i, layer in enumerate(self.layers):
            x, present = layer(x, cos, sin, mask, past_key_values[i] if past_key_values else None)
            presents.append(present)
        return x, tuple(presents)


def save_student(model: LMStudent, folder: str | Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``folder`` (each atomically).

    Tied embeddings are stored once (under ``embed.weight``). The safetensors header carries one
    metadata key only: safetensors keeps metadata in a hash map whose order varies from process to
    process, and one key keeps the same model giving the same bytes (the architecture lives in
    ``config.json``).
    """
    from safetensors.torch import save_file

    from edgekd.fileio import atomic_path, write_json_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    meta = {"format": "pt"}
    with atomic_path(folder / WEIGHTS_FILE, suffix=".safetensors") as tmp:
        save_file(dict(sorted(state.items())), str(tmp), metadata=meta)
    write_json_atomic(folder / CONFIG_FILE, {"format": FORMAT, **model.config.to_dict()})
    return folder


def read_student_config(folder: str | Path) -> LMStudentConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise BadInputError(f"{path}: LM student config not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
        raise BadInputError(f"{path}: not an edgekd LM student config (no format {FORMAT!r})")
    return LMStudentConfig.from_dict(data, where=str(path))


def load_student(folder: str | Path) -> LMStudent:
    """Rebuild a student written by :func:`save_student`, in eval mode (safetensors only)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_student_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise BadInputError(f"{weights}: LM student weights not found")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise BadInputError(f"{weights}: not a valid safetensors file ({exc})") from None
    model = LMStudent(config)
    if config.tie_embeddings and "lm_head.weight" not in state and "embed.weight" in state:
        state["lm_head.weight"] = state["embed.weight"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BadInputError(f"{weights}: weights do not match {CONFIG_FILE} ({first})") from None
    return model.eval()
