"""The LM student family (edgekd/lm/student.py) and the LM metrics (edgekd/lm/metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgekd.errors import BadInputError
from edgekd.lm.metrics import kl_to_teacher, nll_sum, perplexity, top1_agreement
from edgekd.lm.student import LMStudent, LMStudentConfig, load_student, save_student


def tiny(**over) -> LMStudentConfig:
    knobs = dict(vocab_size=61, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=48,
                 context=24)
    return LMStudentConfig(**{**knobs, **over})


def model(**over) -> LMStudent:
    torch.manual_seed(0)
    return LMStudent(tiny(**over)).eval()


def ids(b: int, t: int, v: int = 61, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, v, (b, t), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_cache_layout():
    m = model()
    logits, cache = m(ids(3, 7), use_cache=True)
    assert logits.shape == (3, 7, 61)
    assert len(cache) == 2
    assert all(k.shape == v.shape == (3, 2, 7, 8) for k, v in cache)  # [B, kv heads, T, head]
    assert isinstance(m(ids(1, 1)), torch.Tensor)  # no cache asked, logits only


def test_causal_later_tokens_do_not_change_earlier_logits():
    m = model()
    a = ids(2, 10)
    b = a.clone()
    b[:, 6:] = (b[:, 6:] + 5) % 61
    with torch.no_grad():
        la, lb = m(a), m(b)
    torch.testing.assert_close(la[:, :6], lb[:, :6])
    assert not torch.allclose(la[:, 6:], lb[:, 6:])


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])  # multi-head, grouped-query, multi-query
def test_kv_cache_decode_matches_full_forward(n_kv_heads):
    m = model(n_kv_heads=n_kv_heads)
    x = ids(2, 9)
    with torch.no_grad():
        full = m(x)
        logits, cache = m(x[:, :5], use_cache=True)  # prefill 5, then decode one at a time
        steps = [logits]
        for t in range(5, 9):
            logits, cache = m(x[:, t:t + 1], past_key_values=cache, use_cache=True)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    assert cache[0][0].shape == (2, n_kv_heads, 9, 8)


def test_grouped_query_attention_shrinks_kv_projections_and_cache():
    full, gqa = tiny(n_kv_heads=4), tiny(n_kv_heads=1)
    assert full.param_count() - gqa.param_count() == 2 * 2 * 32 * (32 - 8)  # layers * k,v * ...
    assert full.kv_cache_bytes(100) == 4 * gqa.kv_cache_bytes(100)
    assert gqa.kv_cache_bytes(10, bytes_per_value=2) == 2 * 2 * 10 * 8 * 2


def test_tied_embeddings_share_storage():
    m = model()
    assert m.lm_head.weight.data_ptr() == m.embed.weight.data_ptr()
    untied = model(tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.embed.weight.data_ptr()


@pytest.mark.parametrize("over", [{}, {"tie_embeddings": False}, {"n_kv_heads": 1}])
def test_param_count_matches_module(over):
    m = model(**over)
    assert m.config.param_count() == sum(p.numel() for p in m.parameters())


def test_param_count_by_hand():
    # V=10, d=4, 1 layer, 2 heads (head 2), 1 kv head (kv dim 2), ffn 6, tied:
    # embed 40; q,o 2*16; k,v 2*8; ffn 3*24; norms 2*4; final norm 4 -> 40+32+16+72+8+4 = 172
    cfg = LMStudentConfig(vocab_size=10, dim=4, n_layers=1, n_heads=2, n_kv_heads=1,
                          ffn_hidden=6, context=8)
    assert cfg.param_count() == 172


def test_save_load_round_trip(tmp_path):
    m = model(n_kv_heads=1)
    with torch.no_grad():
        m.layers[0].ffn_norm.weight.add_(0.5)  # not the init value: the load must restore it
    save_student(m, tmp_path / "s")
    again = load_student(tmp_path / "s")
    assert again.config == m.config
    x = ids(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(again(x), m(x))
    assert again.lm_head.weight.data_ptr() == again.embed.weight.data_ptr()
    first = (tmp_path / "s" / "model.safetensors").read_bytes()
    save_student(again, tmp_path / "t")
    assert (tmp_path / "t" / "model.safetensors").read_bytes() == first  # fixed order, same bytes


def test_load_rejects_bad_folders(tmp_path):
    with pytest.raises(BadInputError, match="config not found"):
        load_student(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(BadInputError, match="not an edgekd LM student"):
        load_student(tmp_path)


@pytest.mark.parametrize("over, words", [
    ({"dim": 30}, "divisible by n_heads"),
    ({"n_kv_heads": 3}, "multiple of n_kv_heads"),
    ({"dim": 12, "n_heads": 4, "n_kv_heads": 4}, "must be even"),
    ({"vocab_size": 0}, "vocab_size must be a positive integer"),
])
def test_config_rejects_bad_shapes(over, words):
    with pytest.raises(BadInputError, match=words):
        tiny(**over)


# ---- metrics, against values worked by hand ------------------------------------------------------

@pytest.mark.parametrize("as_torch", [False, True])
def test_uniform_logits_give_perplexity_v(as_torch):
    logits = np.zeros((2, 5, 13), dtype=np.float32)
    targets = np.arange(10).reshape(2, 5)
    if as_torch:
        logits, targets = torch.from_numpy(logits), torch.from_numpy(targets)
    assert perplexity(logits, targets) == pytest.approx(13.0, rel=1e-12)


def test_perplexity_by_hand_and_mask():
    # logits [ln 3, 0] -> p = (3/4, 1/4); targets 0 and 1: NLL = -ln(3/4) - ln(1/4) = ln(16/3)
    logits = np.log(np.array([[[3.0, 1.0], [3.0, 1.0]]]))
    assert perplexity(logits, [[0, 1]]) == pytest.approx(math.sqrt(16 / 3))
    assert perplexity(logits, [[0, 1]], mask=[[True, False]]) == pytest.approx(4 / 3)
    total, count = nll_sum(logits, [[0, 1]])
    assert count == 2 and total == pytest.approx(math.log(16 / 3))


def test_top1_agreement_by_hand():
    s = np.array([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]]])
    t = np.array([[[5.0, 0, 0], [0, 0, 5.0], [0, 0, 1.0], [0, 2.0, 0]]])
    assert top1_agreement(s, t) == pytest.approx(0.5)
    assert top1_agreement(s, t, mask=[[True, False, True, False]]) == pytest.approx(1.0)


def test_kl_by_hand():
    # teacher (1/2, 1/2), student (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln(2) = 1/2 ln(4/3)
    s = np.log(np.array([[0.75, 0.25]]))
    t = np.log(np.array([[0.5, 0.5]]))
    assert kl_to_teacher(s, t) == pytest.approx(0.5 * math.log(4 / 3))
    assert kl_to_teacher(t, t) == pytest.approx(0.0, abs=1e-12)
    # temperature 2 on logits (ln 9, 0) -> softened (ln 3, 0): student (3/4, 1/4) as above
    assert kl_to_teacher(np.array([[math.log(9), 0.0]]), t, temperature=2.0) == pytest.approx(
        0.5 * math.log(4 / 3))
    # a token the teacher rules out adds nothing (0 log 0 = 0)
    assert kl_to_teacher(np.log([[0.5, 0.5]]), np.array([[0.0, -np.inf]])) == pytest.approx(
        math.log(2))


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(BadInputError, match="do not match targets"):
        perplexity(np.zeros((1, 3, 4)), np.zeros((1, 2), dtype=int))
    with pytest.raises(BadInputError, match="must lie in"):
        perplexity(np.zeros((1, 2, 4)), [[0, 4]])
    with pytest.raises(BadInputError, match="differ"):
        top1_agreement(np.zeros((1, 2, 4)), np.zeros((1, 2, 5)))


# ---- LM budget lines on targets, and sizing to them ---------------------------------------------

def test_shipped_profiles_carry_every_lm_line():
    from edgekd.targets import LMBudget, list_targets

    for profile in list_targets():
        lm = profile.lm
        assert all(getattr(lm, f) > 0 for f in LMBudget.__dataclass_fields__), profile.name
        assert lm.prompt_tokens <= lm.context_tokens


def test_lm_table_is_validated_and_round_trips(tmp_path):
    from edgekd.errors import TargetError
    from edgekd.targets import TargetProfile, load_target, parse_target

    mobile = load_target("mobile")
    assert TargetProfile.from_dict(mobile.to_dict()) == mobile
    old = mobile.to_dict()
    old.pop("lm")  # a report stored before [lm] existed
    assert not TargetProfile.from_dict(old).lm.is_set()
    text = tmp_path / "t.toml"
    base = open(mobile.path).read().split("[lm]")[0]
    text.write_text(base + "[lm]\nttft_ms = 10.0\ncontext_tokens = 8\nmemory_mb = -1.0\n")
    with pytest.raises(TargetError) as info:
        parse_target(text.read_text(), str(text))
    message = str(info.value)
    assert "'lm.memory_mb': must not be negative" in message
    assert "'lm.prompt_tokens': must be set" in message


def _device(**over):
    from edgekd.targets import DeviceSpec

    knobs = dict(name="hand", fp32_gflops=10.0, int8_gops=20.0, memory_bandwidth_gbs=1.0,
                 op_overhead_us=0.0, call_overhead_us=0.0)
    return DeviceSpec(**{**knobs, **over})


def test_lm_estimate_by_hand():
    from edgekd.lm.sizing import estimate_lm, file_bytes

    # V=10, d=4, 1 layer, 2 heads of 2, 1 KV head (kv dim 2), ffn 6 (the param count test's model).
    c = LMStudentConfig(vocab_size=10, dim=4, n_layers=1, n_heads=2, n_kv_heads=1, ffn_hidden=6,
                        context=8)
    # MatMul weights: q,o 2*16 + k,v 2*8 + ffn 3*24 + output 40 = 160; table 40 + norms 3*4 = 52.
    # fp32: the output projection reads the table itself, so 120 + 52 floats.
    assert file_bytes(c, 32) == 120 * 4 + 52 * 4
    # int4: MatMuls and table at 4 bits + 1 bit of scale per weight, the norms in fp32
    assert file_bytes(c, 4) == (160 + 40) * 5 // 8 + 12 * 4
    est = estimate_lm(c, _device(), weight_bits=32, prompt_tokens=2, context_tokens=8)
    # decode: 640 weight bytes + KV at 8 positions (2 * 1 layer * 8 * 2 * 4 B = 128) = 768 B at
    # 1 GB/s = 7.68e-4 ms; the FLOPs (2*160 + 4*1*8*4 = 448 at 10 GFLOP/s = 4.5e-5 ms) are less.
    assert est.decode_ms_per_token == pytest.approx(7.68e-4)
    # prefill of 2: FLOPs 2*160*2 + 2*1*4*4 = 672 -> 6.72e-5 ms; bytes 640 + 32 -> 6.72e-4 ms
    assert est.ttft_ms == pytest.approx(6.72e-4)
    # memory: file 688 + KV 128 + logits 2*10*4 = 80 -> 896 B
    assert est.memory_mb == pytest.approx(896 / 2**20)
    slow = estimate_lm(c, _device(call_overhead_us=100.0, op_overhead_us=1.0), 32, 2, 8)
    assert slow.decode_ms_per_token == pytest.approx(7.68e-4 + 0.1 + 20 * 1e-3)


def test_sizing_keeps_the_largest_student_that_fits():
    from edgekd.lm.sizing import candidates, estimate_lm, size_lm_student
    from edgekd.targets import LMBudget

    device = _device(memory_bandwidth_gbs=25.0, fp32_gflops=40.0, int8_gops=150.0)
    budget = LMBudget(model_size_mb=20.0, decode_ms_per_token=50.0)
    got = size_lm_student(budget, device, vocab_size=4000, context=256, weight_bits=8)
    assert got.fits and got.estimate.model_size_mb <= 20.0
    assert all(line.kind == "estimate" and line.passed for line in got.lines)
    bigger = [c for c in candidates(4000, 256) if c.param_count() > got.config.param_count()]
    assert bigger and all(estimate_lm(c, device, 8, 64, 256).model_size_mb > 20.0 for c in bigger)
    capped = size_lm_student(budget, device, 4000, 256, 8, max_params=1_000_000)
    assert capped.config.param_count() <= 1_000_000


def test_sizing_says_which_line_nothing_fits():
    from edgekd.lm.sizing import size_lm_student
    from edgekd.targets import LMBudget

    got = size_lm_student(LMBudget(model_size_mb=0.01), _device(), 4000, 128)
    assert not got.fits and "model_size_mb" in got.reason and "(estimate)" in got.reason


def test_sizing_to_a_shipped_target_and_one_without_lm_lines():
    import dataclasses

    from edgekd.lm.sizing import size_lm_to_target
    from edgekd.targets import LMBudget, load_target

    iot = load_target("iot")
    got = size_lm_to_target(iot, vocab_size=4000, max_params=2_000_000)
    assert got.fits and got.config.context == iot.lm.context_tokens
    assert got.estimate.weight_bits == 8  # iot runs int8
    bare = dataclasses.replace(iot, lm=LMBudget())
    with pytest.raises(BadInputError, match="no \\[lm\\] budget lines"):
        size_lm_to_target(bare, vocab_size=4000)


@pytest.mark.gpu
def test_student_on_cuda_matches_cpu_and_decodes_with_the_cache():
    m = model()
    x = ids(2, 9)
    with torch.no_grad():
        want = m(x)
        gpu = m.to("cuda")
        torch.testing.assert_close(gpu(x.cuda()).cpu(), want, atol=1e-4, rtol=1e-3)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = gpu(x.cuda()).float().cpu()
        assert half.shape == want.shape and torch.isfinite(half).all()  # random logits are
        # near-uniform, so bf16 may reorder them: only finiteness is a fair check here
        logits, cache = gpu(x[:, :5].cuda(), use_cache=True)
        step, _ = gpu(x[:, 5:6].cuda(), past_key_values=cache, use_cache=True)
    torch.testing.assert_close(step.cpu(), want[:, 5:6], atol=1e-4, rtol=1e-3)
