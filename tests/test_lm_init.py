"""``--init-from-teacher`` for causal LMs: a Llama-style teacher's kept layers copied into the
student, checked against ``transformers`` itself (the teacher with the other layers deleted);
sizing by depth only; the teachers and budgets it refuses, each in one line."""

from __future__ import annotations

import copy
import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lm_fixtures import save_hf_teacher, tiny_gpt2, write_corpus
from torch import nn
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import BadInputError
from edgekd.lm.init import init_from_teacher, kept_layers, size_from_teacher, teacher_shape
from edgekd.lm.student import LMStudent
from edgekd.lm.teacher import HFLogits
from edgekd.lm.vocab import VocabMap
from edgekd.targets import load_target

VOCAB = 96


def _llama(layers: int = 4, tied: bool = False, seed: int = 0, **extra) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=tied, rms_norm_eps=1e-5, eos_token_id=0, bos_token_id=0, **extra,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norm gains, so that copying them is checked too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def _teacher(model: nn.Module) -> SimpleNamespace:
    """What init reads of an ``LMTeacher`` loaded from a folder."""
    return SimpleNamespace(module=HFLogits(model), hf_config=model.config.to_dict(), source="t")


def _without_layers(model: nn.Module, keep: list[int]) -> nn.Module:
    """The teacher with every layer not in ``keep`` deleted, by ``transformers``' own modules."""
    cut = copy.deepcopy(model)
    cut.model.layers = nn.ModuleList(cut.model.layers[i] for i in keep)
    cut.config.num_hidden_layers = len(keep)
    return cut.eval()


def _student(model: nn.Module, layers: int, vocab: VocabMap | None = None):
    shape = teacher_shape(_teacher(model))
    student = LMStudent(shape.student(layers, VOCAB if vocab is None else vocab.size, 32)).eval()
    return student, init_from_teacher(student, _teacher(model), vocab)


@pytest.mark.parametrize("tied", [False, True])
def test_student_computes_the_teacher_without_its_dropped_layers(tied):
    teacher = _llama(layers=4, tied=tied)
    student, summary = _student(teacher, 2)
    assert summary["kept_layers"] == [0, 2] and summary["teacher_layers"] == 4
    assert student.config.tie_embeddings is tied
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = _without_layers(teacher, [0, 2])(input_ids=ids, use_cache=False).logits
        got = student(ids)
        whole = teacher(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, whole, atol=1e-3)  # dropping layers changed something


def test_pruned_vocabulary_keeps_the_teachers_rows():
    teacher = _llama(layers=2)
    vocab = VocabMap(np.array([0, 3, 7, 20, 41, 95]), full_size=VOCAB, eos_id=0)
    student, summary = _student(teacher, 1, vocab)
    assert summary["vocab_rows"] == 6
    ids = torch.tensor([[3, 7, 95, 0, 41, 20]])
    with torch.no_grad():
        want = _without_layers(teacher, [0])(input_ids=ids, use_cache=False).logits
        got = student(torch.from_numpy(vocab.to_pruned(ids.numpy())))
    torch.testing.assert_close(got, want[..., vocab.kept], atol=1e-5, rtol=1e-5)


def test_kept_layers_are_every_kth():
    assert kept_layers(12, 6) == [0, 2, 4, 6, 8, 10]  # DistilBERT: one layer out of two
    assert kept_layers(12, 3) == [0, 4, 8] and kept_layers(4, 4) == [0, 1, 2, 3]
    with pytest.raises(BadInputError, match="cannot keep 5 of 4"):
        kept_layers(4, 5)


def test_sizing_picks_the_depth_only_and_refuses_a_budget_one_layer_breaks():
    shape = teacher_shape(_teacher(_llama(layers=8)))
    mobile = load_target("mobile")
    sizing = size_from_teacher(shape, mobile.lm, mobile.device, VOCAB, 32)
    assert (sizing.config.dim, sizing.config.n_layers) == (32, 4)  # half the teacher's 8
    assert (sizing.config.n_heads, sizing.config.ffn_hidden) == (4, 48)
    tiny = dataclasses.replace(mobile.lm, model_size_mb=0.001)
    with pytest.raises(BadInputError, match="even one layer of the teacher's width"):
        size_from_teacher(shape, tiny, mobile.device, VOCAB, 32)
    # a training budget that affords two of the teacher's layers, not four: the depth follows
    from edgekd.lm.affordable import Throughput, TrainingBudget, TrainingCap, training_flops

    two = shape.student(2, VOCAB, 32)
    seconds = training_flops(two, 64, 10) / 1e9  # 10 steps of 64 tokens at 1 GFLOP/s
    cap = TrainingCap(TrainingBudget(seconds * 1.01, "test"), Throughput(1e9), 10, 64, 32)
    capped = size_from_teacher(shape, mobile.lm, mobile.device, VOCAB, 32, training=cap)
    assert capped.config.n_layers == 2 and capped.limits["chosen_by"] == "training"


@pytest.mark.parametrize(
    "teacher,message",
    [
        (lambda: _teacher(tiny_gpt2(VOCAB)), "is gpt2, not Llama-style"),
        (lambda: SimpleNamespace(module=nn.Linear(2, 2), hf_config=None, source="pkg:f"),
         "is a factory module, not Llama-style"),
        (lambda: _teacher(_llama(attention_bias=True)), "has attention biases"),
    ],
)  # fmt: skip
def test_other_teachers_are_refused_in_one_line(teacher, message):
    with pytest.raises(BadInputError, match=message) as info:
        teacher_shape(teacher())
    assert "\n" not in str(info.value)


def test_a_gpt2_teacher_exits_2_and_writes_nothing(tmp_path):
    teacher = save_hf_teacher(tmp_path / "gpt2", kind="gpt2")
    corpus = write_corpus(tmp_path / "c.txt", 40)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "distill", "--task", "causal-lm", "--teacher", str(teacher), "--data", str(corpus),
        "--init-from-teacher", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2
    assert "--init-from-teacher: the teacher" in result.output and "gpt2" in result.output
    assert not out.exists() and not (tmp_path / "run.partial").exists()


@pytest.mark.slow  # one tiny run end to end: ~10 s idle
def test_causal_lm_run_starts_from_the_teacher(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    teacher = save_hf_teacher(tmp_path / "llama")  # 2 layers, hidden 32, untied
    corpus = write_corpus(tmp_path / "c.txt", 120)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "distill", "--task", "causal-lm", "--teacher", str(teacher), "--data", str(corpus),
        "--context", "16", "--steps", "2", "--top-k", "4", "--init-from-teacher",
        "--prune-vocab", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["init_from_teacher"]["kept_layers"] == [0]
    assert report["init_from_teacher"]["vocab_rows"] == report["prune_vocab"]["kept"]
    assert (report["student"]["dim"], report["student"]["n_layers"]) == (32, 1)
    assert report["student"]["tie_embeddings"] is False
