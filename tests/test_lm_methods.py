"""The language-model methods' losses on values worked by hand (two- and three-token
vocabularies), the top-k view of a cached teacher, and the methods on the registry."""

from __future__ import annotations

import math

import pytest
import torch

from edgekd.distill.methods import DistillBatch, all_methods, make_method
from edgekd.distill.methods._tokens import bucket_log_probs
from edgekd.distill.methods.seqkd import seqkd
from edgekd.errors import BadInputError
from edgekd.losses import forward_kl, generalized_jsd, reverse_kl

# Teacher P = (0.5, 0.5) from logits (0, 0); student Q = (0.9, 0.1) from logits (ln 9, 0).
P_LOGITS = torch.tensor([[0.0, 0.0]])
Q_LOGITS = torch.tensor([[math.log(9.0), 0.0]])


def test_forward_kl_two_tokens():
    # KL(P || Q) = 0.5 ln(0.5 / 0.9) + 0.5 ln(0.5 / 0.1) = 0.5 (-0.5877867) + 0.5 (1.6094379)
    assert forward_kl(Q_LOGITS, P_LOGITS).item() == pytest.approx(0.5108256, abs=1e-6)


def test_forward_kl_temperature_two_scales_by_t_squared():
    # at T = 2 the student's logits (ln 9, 0) / 2 give (3/4, 1/4):
    # KL = 0.5 ln(0.5 / 0.75) + 0.5 ln(0.5 / 0.25) = 0.1438410, times T^2 = 4
    got = forward_kl(Q_LOGITS, P_LOGITS, temperature=2.0)
    assert got.item() == pytest.approx(0.5753641, abs=1e-6)


def test_reverse_kl_two_tokens():
    # KL(Q || P) = 0.9 ln(0.9 / 0.5) + 0.1 ln(0.1 / 0.5) = 0.5290080 - 0.1609438
    assert reverse_kl(Q_LOGITS, P_LOGITS).item() == pytest.approx(0.3680642, abs=1e-6)


def test_jsd_half_two_tokens():
    # M = (0.7, 0.3); KL(P || M) = 0.5 ln(5/7) + 0.5 ln(5/3) = 0.0871767
    # KL(Q || M) = 0.9 ln(9/7) + 0.1 ln(1/3) = 0.1163217; JSD(0.5) = their mean
    got = generalized_jsd(Q_LOGITS, P_LOGITS, beta=0.5)
    assert got.item() == pytest.approx(0.1017492, abs=1e-6)


def test_jsd_beta_nine_tenths_two_tokens():
    # M = 0.9 P + 0.1 Q = (0.54, 0.46); KL(P || M) = 0.0032103, KL(Q || M) = 0.3071374
    # JSD(0.9) = 0.9 * 0.0032103 + 0.1 * 0.3071374
    got = generalized_jsd(Q_LOGITS, P_LOGITS, beta=0.9)
    assert got.item() == pytest.approx(0.0336030, abs=1e-6)


def test_jsd_refuses_beta_at_the_ends():
    with pytest.raises(BadInputError, match="beta"):
        generalized_jsd(Q_LOGITS, P_LOGITS, beta=1.0)


def test_seqkd_two_tokens():
    # -ln 0.9 = 0.1053605 for token 0, -ln 0.1 = 2.3025851 for token 1; their mean
    logits = torch.cat([Q_LOGITS, Q_LOGITS]).unsqueeze(0)  # [1, 2, 2]
    got = seqkd(logits, torch.tensor([[0, 1]]))
    assert got.item() == pytest.approx(1.2039728, abs=1e-6)


def test_mask_counts_only_the_positions_that_count():
    student = torch.cat([Q_LOGITS, torch.tensor([[5.0, -5.0]])]).unsqueeze(0)  # [1, 2, 2]
    teacher = torch.cat([P_LOGITS, P_LOGITS]).unsqueeze(0)
    mask = torch.tensor([[True, False]])
    assert forward_kl(student, teacher, mask=mask).item() == pytest.approx(0.5108256, abs=1e-6)
    assert reverse_kl(student, teacher, mask=mask).item() == pytest.approx(0.3680642, abs=1e-6)


def test_top_k_buckets_three_tokens_by_hand():
    # teacher P = (0.5, 0.3, 0.2) cached with k = 1: buckets (0.5, 0.5); a uniform student
    # gives (1/3, 2/3); KL = 0.5 ln(1.5) + 0.5 ln(0.75) = 0.0588915
    buckets = bucket_log_probs(torch.zeros(1, 3), torch.tensor([[0]]))
    torch.testing.assert_close(buckets.exp(), torch.tensor([[1 / 3, 2 / 3]]))
    teacher = torch.tensor([[math.log(0.5), math.log(0.5)]])
    batch = DistillBatch(torch.zeros(1, 3), teacher, None, teacher_index=torch.tensor([[0]]))
    got = make_method("fkl", temperature=1.0).loss(batch)
    assert got.item() == pytest.approx(0.0588915, abs=1e-6)


def test_top_k_is_exact_when_the_tail_is_one_token():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    index = teacher.topk(4, dim=-1).indices  # the 5th token alone is the tail bucket
    t_buckets = bucket_log_probs(teacher, index)
    full = forward_kl(student, teacher)
    batch = DistillBatch(student, t_buckets, None, teacher_index=index)
    torch.testing.assert_close(make_method("fkl", temperature=1.0).loss(batch), full)
    # and with fewer tokens kept the coarsened divergence is smaller (data processing)
    index2 = teacher.topk(2, dim=-1).indices
    batch2 = DistillBatch(student, bucket_log_probs(teacher, index2), None, teacher_index=index2)
    assert make_method("fkl", temperature=1.0).loss(batch2) < full


def test_buckets_stay_finite_when_the_tail_is_empty():
    buckets = bucket_log_probs(torch.tensor([[1.0, 2.0]]), torch.tensor([[1, 0]]))
    assert torch.isfinite(buckets).all()
    assert buckets[0, -1].item() == pytest.approx(-80.0)


@pytest.mark.parametrize("name", ["fkl", "rkl", "gkd", "seqkd"])
def test_language_model_methods_are_registered_for_causal_lm_only(name):
    cls = all_methods()[name]
    assert cls.tasks == ("causal-lm",)
    assert "classification" not in cls.tasks


def test_gkd_knobs_and_seqkd_labels():
    method = make_method("gkd", beta=0.9, on_policy=1.0, temperature=1.0)
    assert (method.beta, method.on_policy) == (0.9, 1.0)
    batch = DistillBatch(Q_LOGITS, P_LOGITS, None)
    assert method.loss(batch).item() == pytest.approx(0.0336030, abs=1e-6)
    with pytest.raises(BadInputError):
        make_method("gkd", on_policy=2.0)
    logits = torch.cat([Q_LOGITS, Q_LOGITS]).unsqueeze(0)
    seq = make_method("seqkd")
    assert seq.teacher_sequences
    got = seq.loss(DistillBatch(logits, None, torch.tensor([[0, 1]])))
    assert got.item() == pytest.approx(1.2039728, abs=1e-6)


def _run_method(args: list[str]):
    """The method a `distill --task causal-lm ARGS` run trains with, built as the pipeline
    builds it (edgekd.lm.pipeline._method), without running anything."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import edgekd.cli.distill as distill_cli
    from edgekd.cli import app
    from edgekd.lm import pipeline

    seen = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(distill_cli, "_launch_workers_or_run", lambda s, *a: seen.append(s))
        result = CliRunner().invoke(app, ["distill", "--task", "causal-lm", *args])
    assert result.exit_code == 0, result.output
    (config,) = seen
    run = SimpleNamespace(config=config, method=config.method, alpha=0.0,
                          settings=pipeline.lm_settings(config, pipeline.LM_DEFAULTS))  # fmt: skip
    return pipeline._method(run)


def test_gkd_flags_reach_the_loss():
    # P = (0.5, 0.5), Q = (0.9, 0.1). beta 0.5: 0.1017492 (test_jsd_half_two_tokens).
    # beta 0.1: M = 0.1 P + 0.9 Q = (0.86, 0.14); KL(P || M) = 0.5 ln(0.5 / 0.86)
    # + 0.5 ln(0.5 / 0.14) = 0.3653207; KL(Q || M) = 0.9 ln(0.9 / 0.86) + 0.1 ln(0.1 / 0.14)
    # = 0.0072689; JSD(0.1) = 0.1 * 0.3653207 + 0.9 * 0.0072689 = 0.0430741
    batch = DistillBatch(Q_LOGITS, P_LOGITS, None)
    half = _run_method(["--method", "gkd"])
    low = _run_method(["--method", "gkd", "--gkd-beta", "0.1", "--on-policy", "0.25"])
    assert (half.beta, half.on_policy, half.temperature) == (0.5, 0.5, 1.0)
    assert (low.beta, low.on_policy) == (0.1, 0.25)
    assert half.loss(batch).item() == pytest.approx(0.1017492, abs=1e-6)
    assert low.loss(batch).item() == pytest.approx(0.0430741, abs=1e-6)


def test_gkd_knobs_are_refused_for_another_method():
    from edgekd.config import DistillConfig
    from edgekd.lm.pipeline import _inputs

    for knob in ({"gkd_beta": 0.3}, {"on_policy": 0.0}):
        with pytest.raises(BadInputError, match="is a knob of --method gkd, not of fkl"):
            _inputs(DistillConfig(task="causal-lm", method="fkl", **knob))


# --- seqkd's teacher continuations with the KV cache (issue 18, h24) ------------------------------


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_seqkd_continuations_with_the_cache_equal_recomputing(kind):
    # greedy decoding is deterministic: the cached and the recompute loops pick the same tokens
    import numpy as np
    from lm_fixtures import tiny_gpt2, tiny_llama

    from edgekd.lm.sample import kv_step, prompt_length, teacher_sequences
    from edgekd.lm.teacher import HFLogits

    teacher = HFLogits({"llama": tiny_llama, "gpt2": tiny_gpt2}[kind](vocab=97)).eval()
    blocks = np.random.default_rng(0).integers(0, 97, (5, 17))  # batches of 2, 2 and 1
    assert kv_step(teacher) is not None
    cached = teacher_sequences(teacher, blocks, batch_size=2, use_cache=True)
    recomputed = teacher_sequences(teacher, blocks, batch_size=2, use_cache=False)
    keep = prompt_length(16)
    np.testing.assert_array_equal(cached, recomputed)
    np.testing.assert_array_equal(cached[:, :keep], blocks[:, :keep])
    assert not teacher.training


def test_seqkd_continuations_with_a_pruned_vocabulary_use_the_cache():
    import numpy as np
    from lm_fixtures import tiny_llama

    from edgekd.lm.sample import kv_step, teacher_sequences
    from edgekd.lm.teacher import HFLogits
    from edgekd.lm.vocab import PrunedTeacher, VocabMap

    blocks = np.random.default_rng(1).integers(0, 40, (3, 13))  # the text uses ids below 40
    vocab = VocabMap.from_blocks((blocks,), 97, 0)
    teacher = PrunedTeacher(HFLogits(tiny_llama(vocab=97)), vocab)
    pruned = vocab.to_pruned(blocks)
    assert kv_step(teacher) is not None
    np.testing.assert_array_equal(teacher_sequences(teacher, pruned, use_cache=True),
                                  teacher_sequences(teacher, pruned, use_cache=False))


def test_a_teacher_without_a_cache_falls_back_to_recomputing():
    import numpy as np

    from edgekd.lm.sample import continue_tokens, kv_step, teacher_sequences

    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Embedding(11, 8), torch.nn.Linear(8, 11))  # ids -> logits
    blocks = np.random.default_rng(0).integers(0, 11, (2, 9))
    assert kv_step(plain) is None
    out = teacher_sequences(plain, blocks)
    want = continue_tokens(plain, torch.from_numpy(blocks[:, :4]), 5).numpy()
    np.testing.assert_array_equal(out, want)
