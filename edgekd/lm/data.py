"""Text for a causal language model: documents read from a file or folder, tokenized with the
teacher's tokenizer and packed into blocks of ``--context`` tokens.

Inputs: a ``.txt`` file (one document per line; blank lines skipped), a ``.jsonl`` file (one JSON
object per line with ``text``, or ``prompt`` and ``response``, joined by a newline), or a folder
of ``.txt`` files (read in name order, each as a ``.txt`` file). Every problem is one line naming
the file (and line) at fault: a missing or empty file, bytes that are not UTF-8, a JSON line
without text, a corpus too short for one block, a tokenizer whose ids do not fit the teacher's
output size.

Packing (as GPT-2 and nanoGPT do): the documents' tokens are concatenated, each followed by the
end-of-text id, and cut into blocks of ``context + 1`` tokens that start ``context`` apart, so
block ``i`` is ``stream[i * context : (i + 1) * context + 1]``: the model reads ``block[:-1]``
and predicts ``block[1:]``, and every token of the stream is predicted once. The tail shorter
than a block is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edgekd.errors import DataError

TEXT_SUFFIXES = (".txt", ".jsonl")


class TextTokenizer(Protocol):
    """What a run needs of a tokenizer (``edgekd.lm.teacher.wrap_tokenizer`` adapts
    Hugging Face's and ``tokenizers``' ones)."""

    vocab_size: int  # every id it produces is below this
    eos_id: int  # the end-of-text id put after each document

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class TokenBlocks:
    """A corpus packed into ``blocks`` [N, context + 1] (int64): inputs ``[:, :-1]``, next
    tokens ``[:, 1:]``."""

    blocks: np.ndarray
    source: str
    documents: int
    tokens: int  # tokens in the stream, before the tail was dropped

    def __post_init__(self) -> None:
        if self.blocks.ndim != 2 or self.blocks.shape[1] < 2:
            raise ValueError(f"blocks must be [N, context + 1], got {self.blocks.shape}")

    @property
    def context(self) -> int:
        return self.blocks.shape[1] - 1

    def __len__(self) -> int:
        return len(self.blocks)

    def describe(self) -> dict:
        return {
            "source": self.source,
            "documents": self.documents,
            "tokens": self.tokens,
            "blocks": len(self),
            "context": self.context,
        }


def read_documents(path: str | Path) -> list[str]:
    """The documents in a ``.txt``/``.jsonl`` file or a folder of ``.txt`` files.

    >>> read_documents("corpus.txt")[:1]  # doctest: +SKIP
    ['The first line is the first document.']
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".txt" and p.is_file())
        if not files:
            raise DataError(f"{path}: no .txt files in this folder")
        docs = [doc for f in files for doc in _read_txt(f)]
        if not docs:
            raise DataError(f"{path}: every .txt file in this folder is empty")
        return docs
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix not in TEXT_SUFFIXES:
        raise DataError(
            f"{path}: language-model text must be .txt (one document per line), .jsonl "
            f"(text, or prompt + response) or a folder of .txt files, not {path.suffix or 'this'}"
        )
    docs = _read_txt(path) if path.suffix == ".txt" else _read_jsonl(path)
    if not docs:
        raise DataError(f"{path}: no text (the file is empty or has only blank lines)")
    return docs


def _lines(path: Path) -> list[str]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: bytes that are not UTF-8 text (byte {exc.start}: "
            f"{data[exc.start : exc.start + 1]!r}); save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff").splitlines()


def _read_txt(path: Path) -> list[str]:
    return [line.strip() for line in _lines(path) if line.strip()]


def _read_jsonl(path: Path) -> list[str]:
    docs = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number}: not JSON ({exc.msg})") from None
        docs.append(_row_text(row, path, number))
    return docs


def _row_text(row: object, path: Path, number: int) -> str:
    if isinstance(row, dict) and isinstance(row.get("text"), str):
        return row["text"]
    if isinstance(row, dict) and isinstance(row.get("prompt"), str):
        if isinstance(row.get("response"), str):
            return row["prompt"] + "\n" + row["response"]
    raise DataError(
        f"{path}: line {number}: expected an object with a string 'text', or 'prompt' and "
        "'response'"
    )


def check_vocabulary(tokenizer_size: int, output_size: int, where: str) -> None:
    """The teacher's logits must cover every id the tokenizer produces. A larger output than the
    tokenizer is fine (checkpoints pad the embedding table to a multiple of 64 or 128)."""
    if tokenizer_size > output_size:
        raise DataError(
            f"{where}: the tokenizer has {tokenizer_size} tokens but the teacher's output has "
            f"{output_size}: this tokenizer does not belong to this teacher"
        )


def pack_blocks(
    token_lists: Iterable[Sequence[int]], context: int, eos_id: int, source: str
) -> TokenBlocks:
    """Concatenate the documents' tokens (each followed by ``eos_id``) and cut blocks of
    ``context + 1`` tokens, ``context`` apart (see the module docstring).

    >>> pack_blocks([[1, 2, 3], [4, 5]], context=3, eos_id=0, source="doc").blocks.tolist()
    [[1, 2, 3, 0], [0, 4, 5, 0]]
    """
    if context < 1:
        raise DataError(f"--context must be >= 1, got {context}")
    stream, documents = [], 0
    for ids in token_lists:
        stream.extend(ids)
        stream.append(eos_id)
        documents += 1
    n = (len(stream) - 1) // context
    if n < 1:
        raise DataError(
            f"{source}: {len(stream)} tokens, too few for one block of --context {context} "
            f"(needs {context + 1}); give more text or a smaller --context"
        )
    flat = np.asarray(stream, dtype=np.int64)
    starts = np.arange(n) * context
    blocks = flat[starts[:, None] + np.arange(context + 1)[None, :]]
    return TokenBlocks(blocks, source, documents, len(stream))


def load_blocks(
    path: str | Path,
    tokenizer: TextTokenizer,
    context: int,
    output_size: int | None = None,
    progress: Callable[[Iterable[str]], Iterable[str]] | None = None,
) -> TokenBlocks:
    """Read, tokenize and pack ``path`` (see :func:`read_documents`, :func:`pack_blocks`);
    ``output_size``: the teacher's logit width, checked against the tokenizer first."""
    if output_size is not None:
        check_vocabulary(tokenizer.vocab_size, output_size, str(path))
    docs = read_documents(path)
    encoded = (tokenizer.encode(d) for d in (progress(docs) if progress else docs))
    out = pack_blocks(encoded, context, tokenizer.eos_id, str(path))
    top = int(out.blocks.max())
    if output_size is not None and top >= output_size:  # a tokenizer that lies about its size
        raise DataError(
            f"{path}: the tokenizer produced id {top}, outside the teacher's {output_size} outputs"
        )
    return out
