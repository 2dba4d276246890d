"""Training a causal-LM student: the teacher's top-k cached once (memory-mapped), each method's
view (top-k, live teacher, on-policy samples, teacher sequences), and scratch training that
lowers held-out perplexity. Tiny models: seconds in all."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lm_fixtures import pydoc_lines, save_hf_teacher, write_corpus

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


@pytest.mark.slow  # a tokenizer and a (tiny) teacher trained, saved and loaded twice: ~5 s idle
def test_default_teacher_is_trained_once_then_read_from_the_cache(monkeypatch, tmp_path):
    import edgekd.lm.default as default

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    # a very small recipe: what is tested is the caching, not the teacher's quality
    monkeypatch.setattr(default, "VOCAB", 300)
    monkeypatch.setattr(default, "TEACHER_ARCH", {**default.TEACHER_ARCH, "hidden_size": 16,
                        "intermediate_size": 32, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "num_key_value_heads": 2})  # fmt: skip
    monkeypatch.setattr(default, "TEACHER_RECIPE", LMTrainConfig(steps=2, batch_size=2, evals=1))
    lines = pydoc_lines(700)
    monkeypatch.setattr(default, "default_documents", lambda: (
        lines[:400], lines[400:550], lines[550:]))  # fmt: skip
    first = default.default_lm_teacher()
    again = default.default_lm_teacher()
    assert (first.source, again.source) == ("default (trained now)", "default (cached)")
    assert again.output_size == 300 and again.tokenizer.vocab_size <= 300
    assert list(tmp_path.glob("lm-teacher-*/model.safetensors"))


def test_default_documents_split_by_position():
    from edgekd.lm.default import default_documents

    train, val, test = default_documents()
    assert len(val) == len(test) and len(train) > 15 * len(test)
    assert not set(test) & set(val) or len(set(test) & set(val)) < len(test) // 10


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_methods_train_on_cuda(setup, precision, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    teacher, train, val = setup
    top = teacher_top_k(teacher.module, train, k=8, device="cuda")
    assert top.source == "cache miss"
    side = TeacherSide(top_k=top, live=teacher.module)
    config = LMTrainConfig(steps=6, evals=1, batch_size=4, alpha=0.5, device="cuda",
                           precision=precision)  # fmt: skip
    student = _student(teacher.output_size)
    history = train_lm(student, train, val, config, make_method("gkd", on_policy=0.5), side)
    assert all(map(math.isfinite, history.loss))
    assert next(student.parameters()).device.type == "cpu"  # modules go back where they were


def test_an_interrupted_run_resumes_to_bit_identical_weights(setup, monkeypatch, tmp_path):
    """SIGINT after step 3 of 8 (on-policy GKD over the cached top-k: every random draw counts),
    then --resume: the same final weights, bit for bit, as a run never stopped."""
    import os
    import signal

    import edgekd.lm.train as lm_train
    from edgekd.errors import Interrupted

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    teacher, train, val = setup
    side = TeacherSide(top_k=teacher_top_k(teacher.module, train, k=4), live=teacher.module)
    config = LMTrainConfig(steps=8, evals=2, batch_size=4, alpha=0.5, checkpoint_every=0.0)

    def run(resume: bool = False, checkpoint=None) -> dict:
        student = _student(teacher.output_size)
        method = make_method("gkd", on_policy=0.5, temperature=1.0)
        train_lm(student, train, val, config, method, side, checkpoint=checkpoint, resume=resume)
        return student.state_dict()

    whole = run()
    one_step = lm_train._Run.one_step

    def stopped_after_three(self) -> None:
        one_step(self)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: noted, acted on at the next step

    checkpoint = tmp_path / "checkpoint.pt"
    monkeypatch.setattr(lm_train._Run, "one_step", stopped_after_three)
    with pytest.raises(Interrupted, match="stopped by SIGINT at step 4 of 8"):
        run(checkpoint=checkpoint)
    steps = []

    def counted(self) -> None:
        one_step(self)
        steps.append(self.step)

    monkeypatch.setattr(lm_train._Run, "one_step", counted)
    assert torch.load(checkpoint, weights_only=True)["step"] == 3
    resumed = run(resume=True, checkpoint=checkpoint)
    assert steps == [4, 5, 6, 7, 8]  # went on from the checkpoint, not from the start
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name


def test_a_spent_time_budget_stops_training_at_the_next_step_not_the_next_evaluation():
    blocks = np.random.default_rng(0).integers(0, 64, (8, CONTEXT + 1))
    config = LMTrainConfig(steps=50, batch_size=2, evals=1, time_budget=1e-9)
    history = train_lm(_student(64), blocks, blocks[:2], config)
    assert history.eval_steps == [1]  # evaluated and stopped after the first step, not at 50
    assert history.stopped.startswith("time budget of 1e-09 s spent after step 1 of 50")
