"""Training a causal-LM student: the teacher's top-k cached once (memory-mapped), each method's
view (top-k, live teacher, on-policy samples, teacher sequences), and scratch training that
lowers held-out perplexity. Tiny models: seconds in all."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lm_fixtures import save_hf_teacher, write_corpus

from edgekd.distill.methods import make_method
from edgekd.lm.data import load_blocks
from edgekd.lm.sample import generated_mask, teacher_sequences
from edgekd.lm.student import LMStudent, LMStudentConfig
from edgekd.lm.teacher import load_lm_teacher
from edgekd.lm.topk import teacher_top_k
from edgekd.lm.train import LMTrainConfig, TeacherSide, perplexity_of, train_lm

torch.set_num_threads(1)
CONTEXT = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    teacher = load_lm_teacher(str(save_hf_teacher(root / "teacher")))
    blocks = load_blocks(write_corpus(root / "c.txt", 120), teacher.tokenizer, CONTEXT).blocks
    return teacher, blocks[:-24], blocks[-24:]


def _student(vocab: int) -> LMStudent:
    torch.manual_seed(0)
    config = LMStudentConfig(
        vocab_size=vocab, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_hidden=64,
        context=CONTEXT,
    )  # fmt: skip
    return LMStudent(config)


def test_top_k_is_cached_once_and_memory_mapped(setup, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    teacher, train, _ = setup
    first = teacher_top_k(teacher.module, train, k=4)
    again = teacher_top_k(teacher.module, train, k=4)
    assert (first.source, again.source) == ("cache miss", "cache hit")
    assert isinstance(again.log_probs, np.memmap)
    assert again.log_probs.shape == (len(train), CONTEXT, 5)
    assert again.index.shape == (len(train), CONTEXT, 4)
    # the k tokens and the tail bucket are a distribution, the k the teacher's most likely
    np.testing.assert_allclose(np.exp(again.log_probs).sum(-1), 1.0, rtol=1e-4)
    with torch.no_grad():
        logits = teacher.module(torch.from_numpy(train[:2, :-1]))
    expected = torch.log_softmax(logits, -1).topk(4, -1)
    np.testing.assert_allclose(again.log_probs[:2, :, :4], expected.values.numpy(), atol=1e-5)
    np.testing.assert_array_equal(again.index[:2], expected.indices.numpy())


def test_scratch_training_lowers_held_out_perplexity(setup):
    teacher, train, val = setup
    student = _student(teacher.output_size)
    before = perplexity_of(student, val)
    history = train_lm(student, train, val, LMTrainConfig(steps=40, evals=2, batch_size=8))
    assert perplexity_of(student, val) < 0.7 * before
    assert history.eval_steps == [20, 40] and all(map(math.isfinite, history.loss))


@pytest.mark.parametrize("name,on_policy", [("fkl", None), ("rkl", None), ("gkd", 1.0)])
def test_token_methods_train_finite(setup, name, on_policy, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    teacher, train, val = setup
    side = TeacherSide(top_k=teacher_top_k(teacher.module, train, k=8), live=teacher.module)
    extra = {} if on_policy is None else {"on_policy": on_policy}
    method = make_method(name, temperature=1.0, **extra)
    config = LMTrainConfig(steps=6, evals=1, batch_size=4, alpha=0.0)
    history = train_lm(_student(teacher.output_size), train, val, config, method, side)
    assert all(map(math.isfinite, history.loss)) and history.best_step == 6


def test_seqkd_trains_on_the_teachers_greedy_continuations(setup):
    teacher, train, val = setup
    seqs = teacher_sequences(teacher.module, train[:8])
    keep = (CONTEXT + 1) // 2
    np.testing.assert_array_equal(seqs[:, :keep], train[:8, :keep])  # the prompt is the block's
    with torch.no_grad():  # greedy: each generated token is the teacher's argmax after its prefix
        logits = teacher.module(torch.from_numpy(seqs[:, :-1]))
    np.testing.assert_array_equal(seqs[:, keep:], logits[:, keep - 1 :].argmax(-1).numpy())
    assert generated_mask(1, CONTEXT)[0].tolist() == [i >= keep - 1 for i in range(CONTEXT)]
    config = LMTrainConfig(steps=4, evals=1, batch_size=4, alpha=0.0)
    side = TeacherSide(sequences=seqs)
    history = train_lm(_student(teacher.output_size), train[:8], val, config,
                       make_method("seqkd"), side)  # fmt: skip
    assert all(map(math.isfinite, history.loss))


def test_a_method_without_its_teacher_side_is_refused(setup):
    teacher, train, val = setup
    config = LMTrainConfig(steps=2, alpha=0.5)
    with pytest.raises(ValueError, match="needs the teacher"):
        train_lm(_student(teacher.output_size), train, val, config, make_method("gkd"),
                 TeacherSide(top_k=None, live=None, sequences=None))  # fmt: skip
