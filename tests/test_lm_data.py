"""Language-model text: reading .txt/.jsonl/folders, packing into blocks, and one clear line for
each kind of bad input (empty file, bytes that are not UTF-8, a tokenizer that is not the
teacher's)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lm_fixtures import raw_tokenizer, write_corpus

from edgekd.errors import DataError
from edgekd.lm.data import check_vocabulary, load_blocks, pack_blocks, read_documents
from edgekd.lm.teacher import WrappedTokenizer


def test_pack_blocks_by_hand():
    # stream 1 2 3 <e> 4 5 <e> (7 tokens), context 2: blocks start 0, 2, 4 and span 3 tokens
    out = pack_blocks([[1, 2, 3], [4, 5]], context=2, eos_id=9, source="s")
    assert out.blocks.tolist() == [[1, 2, 3], [3, 9, 4], [4, 5, 9]]
    assert out.blocks.dtype == np.int64
    assert (out.documents, out.tokens, out.context) == (2, 7, 2)


def test_every_token_is_predicted_once():
    stream_docs = [list(range(1, 8)), list(range(10, 14))]
    out = pack_blocks(stream_docs, context=3, eos_id=0, source="s")
    targets = out.blocks[:, 1:].ravel().tolist()
    stream = [*range(1, 8), 0, *range(10, 14), 0]
    assert targets == stream[1 : 1 + len(targets)]


def test_txt_jsonl_and_folder(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\n  second doc  \n", encoding="utf-8")
    rows = [{"text": "third"}, {"prompt": "Q?", "response": "A."}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert read_documents(tmp_path / "a.txt") == ["first doc", "second doc"]
    assert read_documents(tmp_path / "b.jsonl") == ["third", "Q?\nA."]
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "2.txt").write_text("later\n", encoding="utf-8")
    (folder / "1.txt").write_text("earlier\n", encoding="utf-8")
    assert read_documents(folder) == ["earlier", "later"]


def test_empty_file_is_one_line(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty.txt: no text") as info:
        read_documents(path)
    assert "\n" not in str(info.value)


def test_undecodable_bytes_name_the_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("fine\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt: line 2: bytes that are not UTF-8"):
        read_documents(path)


def test_jsonl_row_without_text(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "no"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"rows.jsonl: line 2: expected an object"):
        read_documents(path)


def test_tokenizer_larger_than_teacher_output_is_refused(tmp_path):
    tok = WrappedTokenizer(raw_tokenizer())
    corpus = write_corpus(tmp_path / "c.txt", lines=20)
    match = r"tokenizer has 320 tokens but the teacher.s output has 100"
    with pytest.raises(DataError, match=match):
        load_blocks(corpus, tok, context=16, output_size=100)
    check_vocabulary(320, 384, "padded")  # a padded output table is fine


def test_too_short_for_one_block(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("hi\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"too few for one block of --context 64"):
        load_blocks(path, WrappedTokenizer(raw_tokenizer()), context=64)


def test_load_blocks_round_trips_text(tmp_path):
    tok = WrappedTokenizer(raw_tokenizer())
    corpus = write_corpus(tmp_path / "c.txt", lines=30)
    blocks = load_blocks(corpus, tok, context=16, output_size=tok.vocab_size)
    first = read_documents(corpus)[0]
    assert tok.decode(blocks.blocks[0]).startswith(first[:10])
    assert blocks.blocks.max() < tok.vocab_size


def test_a_factory_teacher_with_a_tokenizer_file(tmp_path):
    from lm_fixtures import raw_tokenizer as tok_fn

    from edgekd.lm.teacher import load_lm_teacher

    tok_fn().save(str(tmp_path / "tokenizer.json"))
    teacher = load_lm_teacher("lm_fixtures:tiny_gpt2", str(tmp_path / "tokenizer.json"))
    assert teacher.output_size == 320 and teacher.tokenizer.vocab_size == 320
    assert teacher.tokenizer.eos_id == 0
    import torch

    assert teacher.module(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 320)


def test_saving_a_transformers_model_draws_no_bar_and_restores_the_setting(tmp_path, capfd):
    # transformers' "Writing model shards" bar ignores EDGEKD_NO_PROGRESS (issue 18)
    from lm_fixtures import tiny_llama
    from transformers.utils import logging as hf_logging

    from edgekd.lm.teacher import save_hf_quietly

    hf_logging.enable_progress_bar()
    try:
        save_hf_quietly(tiny_llama(vocab=97), tmp_path)
        assert hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.disable_progress_bar()
    assert (tmp_path / "model.safetensors").is_file()
    assert "Writing" not in capfd.readouterr().err


def test_top_k_pass_in_bf16_is_close_to_fp32_and_cached_apart(tmp_path, monkeypatch):
    import torch
    from lm_fixtures import tiny_llama

    from edgekd.lm.teacher import HFLogits
    from edgekd.lm.topk import pass_precision, teacher_top_k

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    teacher = HFLogits(tiny_llama(vocab=97)).eval()
    blocks = np.random.default_rng(0).integers(0, 97, (3, 17))
    # a 1.3M-parameter teacher stays in fp32 whatever the CPU: bf16 does not pay at that size
    assert pass_precision(teacher, torch.device("cpu")) == "fp32"
    full = teacher_top_k(teacher, blocks, k=4, precision="fp32")
    half = teacher_top_k(teacher, blocks, k=4, precision="bf16")
    assert (full.precision, half.precision) == ("fp32", "bf16")
    assert half.source == "cache miss"  # its own cache entry, not the fp32 one
    # bf16 keeps 8 bits of mantissa: log-probs near -4.6 (1/97) move by a few hundredths
    np.testing.assert_allclose(half.log_probs[..., 0], full.log_probs[..., 0], atol=0.1)
    assert next(teacher.parameters()).dtype == torch.float32  # the run's teacher is untouched
    with pytest.raises(ValueError, match="precision"):
        teacher_top_k(teacher, blocks, k=4, precision="fp16")
