"""The teacher of a causal-LM run and its tokenizer, loaded safely.

Two kinds of teacher (``--teacher``):

- a Hugging Face folder: ``AutoModelForCausalLM`` with the tokenizer beside it (``AutoTokenizer``
  from the same folder), any architecture ``transformers`` loads (Llama, GPT-2, Qwen, Phi, ...).
  Weights are read from safetensors only; a folder with only pickled weights (``.bin``, ``.pt``)
  is refused unless ``--trust-checkpoint``, and so is one whose config asks for its own code
  (``auto_map``: ``trust_remote_code``). Nothing is downloaded (``local_files_only``).
- ``pkg.module:factory`` (or ``file.py:factory``) returning a module that maps ``input_ids`` [B, T]
  (and optionally ``attention_mask``) to logits [B, T, V], with ``--tokenizer FOLDER`` (a Hugging
  Face tokenizer folder or a ``tokenizer.json`` file).

Either way the run sees an :class:`LMTeacher`: a module from ``input_ids`` to logits, the
tokenizer as a :class:`edgekd.lm.data.TextTokenizer`, and where they came from. The embedded
default teacher is in ``edgekd.lm.default``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.errors import BadInputError, UnsafeInputError
from edgekd.lm.data import check_vocabulary
from edgekd.safety._files import one_line
from edgekd.usercode import call_factory, parse_factory

PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class WrappedTokenizer:
    """A Hugging Face tokenizer or a ``tokenizers.Tokenizer`` as a ``TextTokenizer``: plain ids
    (no special tokens added), the vocabulary size counting added tokens, an end-of-text id."""

    def __init__(self, tokenizer: Any, where: str = "tokenizer") -> None:
        self.inner = tokenizer
        if hasattr(tokenizer, "get_vocab_size"):  # tokenizers.Tokenizer
            self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
            eos = _raw_eos(tokenizer)
        else:  # transformers: len() counts the added tokens, .vocab_size does not
            self.vocab_size = len(tokenizer)
            eos = tokenizer.eos_token_id
            if eos is None:
                eos = tokenizer.pad_token_id
        if eos is None:
            raise BadInputError(f"{where}: the tokenizer has no end-of-text token (eos)")
        self.eos_id = int(eos)

    def encode(self, text: str) -> list[int]:
        if hasattr(self.inner, "get_vocab_size"):
            return list(self.inner.encode(text, add_special_tokens=False).ids)
        return list(self.inner.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.inner.decode(list(ids), skip_special_tokens=True)


_EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")


def _raw_eos(tokenizer: Any) -> int | None:
    for name in _EOS_NAMES:
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return token_id
    return None


class HFLogits(nn.Module):
    """A ``transformers`` causal LM as a module from ``input_ids`` to logits (no KV cache: the
    teacher scores whole blocks)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits


@dataclass(frozen=True)
class LMTeacher:
    """A causal-LM teacher: ``module(input_ids) -> logits [B, T, output_size]``, its tokenizer."""

    module: nn.Module
    tokenizer: Any  # a TextTokenizer (WrappedTokenizer)
    source: str  # "default (cached)", "default (trained now)", or the user's spec
    path: str
    output_size: int
    params: int
    hf_config: dict | None = None  # the transformers config, where there is one

    def __post_init__(self) -> None:
        check_vocabulary(self.tokenizer.vocab_size, self.output_size, self.path)

    def describe(self) -> dict:
        return {
            "source": self.source,
            "path": self.path,
            "params": self.params,
            "vocab_size": self.tokenizer.vocab_size,
            "output_size": self.output_size,
            "architecture": (self.hf_config or {}).get("model_type", "module"),
        }


def load_lm_teacher(
    spec: str, tokenizer: str | None = None, trust_checkpoint: bool = False
) -> LMTeacher:
    """The teacher ``--teacher SPEC`` names: a Hugging Face folder or ``pkg.module:factory``
    (which needs ``tokenizer``, a folder or ``tokenizer.json``).

    >>> teacher = load_lm_teacher("models/SmolLM2-135M")  # doctest: +SKIP
    >>> teacher.module(torch.tensor([[1, 2, 3]])).shape  # doctest: +SKIP
    torch.Size([1, 3, 49152])
    """
    if Path(spec).is_dir():
        return load_hf_teacher(spec, trust_checkpoint, tokenizer)
    if parse_factory(spec) is None:
        raise BadInputError(
            f"--teacher {spec}: neither a folder (a Hugging Face causal LM) nor pkg.module:factory"
        )
    if tokenizer is None:
        raise BadInputError(
            f"--teacher {spec}: a factory teacher needs --tokenizer (a tokenizer folder or "
            "tokenizer.json)"
        )
    module = call_factory(spec, "teacher")
    if not isinstance(module, nn.Module):
        raise BadInputError(f"--teacher {spec}: the factory returned {type(module).__name__}, "
                            "not a torch.nn.Module mapping input_ids to logits")
    tok = load_tokenizer(tokenizer, trust_checkpoint)
    module = HFLogits(module) if _is_transformers_model(module) else module
    module.eval()
    return LMTeacher(module, tok, spec, spec, probe_output_size(module, spec), _params(module))


def _is_transformers_model(module: nn.Module) -> bool:
    """A ``transformers`` model returns an output object: read its ``logits``."""
    return any(c.__module__.startswith("transformers.") for c in type(module).__mro__)


def load_hf_teacher(
    folder: str | Path, trust_checkpoint: bool = False, tokenizer: str | None = None
) -> LMTeacher:
    """A Hugging Face causal LM folder (weights, config, tokenizer), read without code or
    pickles unless ``trust_checkpoint``."""
    folder = Path(folder)
    config = _read_config(folder)
    _check_weights(folder, trust_checkpoint)
    if config.get("auto_map") and not trust_checkpoint:
        raise UnsafeInputError(
            f"{folder}/config.json: the model needs code shipped in its folder (auto_map); "
            "pass --trust-checkpoint to run it"
        )
    from transformers import AutoModelForCausalLM

    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(
                folder,
                local_files_only=True,
                trust_remote_code=trust_checkpoint,
                use_safetensors=None if trust_checkpoint else True,
                dtype=torch.float32,
            )
    except (OSError, ValueError, KeyError) as exc:
        raise BadInputError(f"{folder}: not a causal language model ({one_line(exc)})") from None
    tok = load_tokenizer(tokenizer or folder, trust_checkpoint)
    module = HFLogits(model).eval()
    out = _output_size(model) or probe_output_size(module, str(folder))
    return LMTeacher(module, tok, str(folder), str(folder), out, _params(model), config)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", "Writing model shards") off inside
    edgekd's calls: ``EDGEKD_NO_PROGRESS`` does not reach them and they would interleave with
    edgekd's bars. The setting is restored afterwards (a user's program may want it)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_hf_quietly(model: nn.Module, folder: str | Path) -> None:
    """``model.save_pretrained(folder)`` in safetensors, without transformers' bar."""
    with quiet_transformers():
        model.save_pretrained(folder, safe_serialization=True)


def load_tokenizer(where: str | Path, trust_checkpoint: bool = False) -> WrappedTokenizer:
    """A tokenizer from a Hugging Face folder (``AutoTokenizer``) or a ``tokenizer.json``."""
    where = Path(where)
    if where.is_file():
        from tokenizers import Tokenizer

        try:
            return WrappedTokenizer(Tokenizer.from_file(str(where)), str(where))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise BadInputError(f"{where}: not a tokenizer.json ({one_line(exc)})") from None
    if not where.is_dir():
        raise BadInputError(f"{where}: no such tokenizer folder or tokenizer.json")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            where, local_files_only=True, trust_remote_code=trust_checkpoint
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{where}: no usable tokenizer here ({one_line(exc)})") from None
    return WrappedTokenizer(tok, str(where))


def probe_output_size(module: nn.Module, where: str) -> int:
    """The logit width, from one forward pass on a single token."""
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 1, dtype=torch.long))
    except Exception as exc:
        raise BadInputError(
            f"{where}: the teacher failed on input_ids [1, 1] ({type(exc).__name__}: "
            f"{one_line(exc)})"
        ) from None
    out = getattr(out, "logits", out)
    if not torch.is_tensor(out) or out.ndim != 3:
        raise BadInputError(
            f"{where}: the teacher must map input_ids [B, T] to logits [B, T, V], got "
            f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}"
        )
    return int(out.shape[-1])


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{folder}: no config.json (not a Hugging Face model folder)") from None
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: unreadable ({one_line(exc)})") from None
    if not isinstance(config, dict):
        raise BadInputError(f"{path}: not a JSON object")
    return config


def _check_weights(folder: Path, trust_checkpoint: bool) -> None:
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if any(n.endswith(".safetensors") for n in names):
        return
    pickled = [n for n in names if n.endswith(PICKLED_WEIGHTS)]
    if not pickled:
        raise BadInputError(f"{folder}: no weights (*.safetensors) in this folder")
    if not trust_checkpoint:
        raise UnsafeInputError(
            f"{folder}: only pickled weights ({', '.join(sorted(pickled))}), which can run code "
            "when loaded; convert them to safetensors or pass --trust-checkpoint"
        )


def _output_size(model: nn.Module) -> int | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if weight is not None else None


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
