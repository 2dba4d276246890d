"""The loss over the vocabulary a chunk of tokens at a time (edgekd.lm.head) gives the loss and
the gradients of the whole-logits computation, in the training step as in the head alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.methods import make_method
from edgekd.lm import head
from edgekd.lm.head import WholeLogits, chunk_tokens, has_head, head_loss
from edgekd.lm.student import LMStudent, LMStudentConfig
from edgekd.lm.topk import TopK
from edgekd.lm.train import LMTrainConfig, TeacherSide, _Run, perplexity_of

VOCAB, CONTEXT = 50, 12


def _student() -> LMStudent:
    torch.manual_seed(0)
    return LMStudent(LMStudentConfig(vocab_size=VOCAB, dim=16, n_layers=1, n_heads=2,
                                     n_kv_heads=1, ffn_hidden=32, context=CONTEXT))  # fmt: skip


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_chunks_give_the_whole_logits_loss_and_gradients():
    model = _student()
    x = torch.randint(0, VOCAB, (3, CONTEXT))
    y = torch.randint(0, VOCAB, (3 * CONTEXT,))
    y[::5] = -100  # ignored positions, in several chunks

    def loss_of(logits, part):
        return F.cross_entropy(logits, y[part], reduction="sum") / (y != -100).sum()

    assert has_head(model) and not has_head(WholeLogits(model))
    whole = head_loss(WholeLogits(model), x, loss_of)
    whole.backward()
    expected = _grads(model)
    model.zero_grad()
    chunked = head_loss(model, x, loss_of, chunk=7)  # 36 positions: 5 chunks of 7 and one of 1
    (2.0 * chunked).backward()  # the incoming gradient scales the stored ones
    torch.testing.assert_close(chunked, whole)
    assert expected.keys() == _grads(model).keys()
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, 2.0 * expected[name], msg=name)
    with torch.no_grad():  # evaluation: no gradients kept
        torch.testing.assert_close(head_loss(model, x, loss_of, chunk=7), whole)


def _top_k(rows: int, k: int = 4) -> TopK:
    """A cached teacher's top-k for ``rows`` blocks: k ids and their log-probabilities plus the
    tail's, as edgekd.lm.topk stores them."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(rows, CONTEXT, VOCAB, generator=gen)
    lp = logits.log_softmax(-1)
    top, index = lp.topk(k, dim=-1)
    tail = torch.log1p(-top.exp().sum(-1, keepdim=True).clamp_max(1 - 1e-6))
    return TopK(torch.cat([top, tail], -1).half().numpy(), index.int().numpy())


@pytest.mark.parametrize("name, alpha", [("fkl", 0.3), ("rkl", 0.0), ("gkd", 0.5), ("seqkd", 0.0)])
def test_a_training_step_is_the_same_in_chunks(name, alpha, monkeypatch):
    rows = 6
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, VOCAB, (rows, CONTEXT + 1))
    side = TeacherSide(top_k=_top_k(rows), sequences=blocks[::-1].copy())
    kwargs = {"on_policy": 0.0} if name == "gkd" else {}
    config = LMTrainConfig(steps=2, batch_size=4, alpha=alpha)
    losses, grads = [], []
    for chunked in (False, True):
        model = _student()
        # 4 logits a chunk: every block's positions split over several chunks
        monkeypatch.setattr(head, "CPU_CHUNK_LOGITS", 4 * VOCAB if chunked else 10**9)
        run = _Run(model if chunked else WholeLogits(model), make_method(name, **kwargs), side,
                   blocks, None, config, "t")  # fmt: skip
        idx = np.array([0, 2, 3, 5])
        block = torch.from_numpy(blocks[idx])
        loss = run._loss(idx, block[:, :-1], block[:, 1:], alpha)
        loss.backward()
        losses.append(loss.detach())
        grads.append(_grads(model))
    assert chunk_tokens(VOCAB, torch.device("cpu")) == 4 * VOCAB // VOCAB
    torch.testing.assert_close(losses[1], losses[0])
    for name_, grad in grads[1].items():
        torch.testing.assert_close(grad, grads[0][name_], msg=name_)


def test_perplexity_is_the_same_in_chunks(monkeypatch):
    model = _student()
    blocks = np.random.default_rng(0).integers(0, VOCAB, (5, CONTEXT + 1))
    whole = perplexity_of(WholeLogits(model), blocks)
    monkeypatch.setattr(head, "CPU_CHUNK_LOGITS", 3 * VOCAB)
    assert perplexity_of(model, blocks) == pytest.approx(whole, rel=1e-6)


def _reference_scores(logits, index, labels):
    """The top-k view and the cross-entropy by autograd, as written before the fused pass."""
    total = torch.logsumexp(logits, dim=-1, keepdim=True)
    top = logits.gather(-1, index) - total
    tail = torch.logsumexp(logits.scatter(-1, index, float("-inf")), -1, keepdim=True) - total
    ce = F.cross_entropy(logits, labels.clamp_min(0), reduction="none") * (labels != -100)
    return torch.cat([top, tail], dim=-1), ce


def test_the_fused_top_k_scores_have_autograds_gradients():
    from edgekd.distill.methods._tokens import top_k_scores

    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(6, 11, generator=gen, dtype=torch.float64)).requires_grad_()
    index = torch.stack([torch.randperm(11, generator=gen)[:3] for _ in range(6)])
    labels = torch.tensor([0, 4, -100, 7, 10, 2])
    weights = (torch.randn(6, 4, generator=gen, dtype=torch.float64),
               torch.randn(6, generator=gen, dtype=torch.float64))
    got = top_k_scores(logits, index, labels)
    want = _reference_scores(logits, index, labels)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), b)
    grads = [torch.autograd.grad((s[0] * weights[0]).sum() + (s[1] * weights[1]).sum(), logits)[0]
             for s in (got, want)]  # fmt: skip
    torch.testing.assert_close(grads[0], grads[1])
    # a hand-worked value: uniform logits over 4 tokens, top-1 token 0 -> log(1/4), log(3/4)
    buckets, _ = top_k_scores(torch.zeros(1, 4), torch.tensor([[0]]))
    torch.testing.assert_close(buckets.exp(), torch.tensor([[0.25, 0.75]]))

