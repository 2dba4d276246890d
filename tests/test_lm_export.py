"""LM export with a KV cache (edgekd/lm/export.py, lm/decode.py) and LM quantization
(edgekd/lm/quantize.py): parity with PyTorch, no file on a parity failure, smaller variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgekd.errors import BadInputError, ParityError
from edgekd.lm.decode import OnnxLM, torch_greedy
from edgekd.lm.export import export_lm, lm_parity
from edgekd.lm.quantize import (
    MODES,
    LMQuantConfig,
    LMVariant,
    choose_lm_variant,
    quantize_lm,
    select_lm_quantization,
)
from edgekd.lm.student import LMStudent, LMStudentConfig
from edgekd.runtimes.ort_cpu import open_session

PROMPTS = [[1, 2, 3], [40], [7, 7, 7, 7, 9]]


def student(n_kv_heads: int = 2, vocab: int = 61) -> LMStudent:
    torch.manual_seed(0)
    cfg = LMStudentConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads,
                          ffn_hidden=64, context=32)
    return LMStudent(cfg).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = student()
    path = tmp_path_factory.mktemp("lm") / "student.onnx"
    return model, export_lm(model, path, PROMPTS, new_tokens=6)


def test_export_is_parity_proven_and_names_the_cache(exported):
    model, result = exported
    assert result.greedy_identical and result.max_abs_diff < 1e-4
    assert (result.layers, result.kv_heads, result.head_dim) == (2, 2, 8)
    sess = open_session(result.path)
    names = [i.name for i in sess.get_inputs()]
    assert names[0] == "input_ids" and "past_key_values.1.value" in names
    outputs = [o.name for o in sess.get_outputs()]
    assert outputs[:3] == ["logits", "present.0.key", "present.0.value"]


def test_onnx_prefill_and_decode_match_torch_with_batch_two(exported):
    model, result = exported
    lm = OnnxLM(open_session(result.path))
    ids = np.array([[3, 4, 5, 6], [9, 8, 7, 6]], dtype=np.int64)
    logits, cache = lm.step(ids[:, :3], lm.empty_cache(batch=2))  # prefill: past of length 0
    last, cache = lm.step(ids[:, 3:], cache)
    assert cache["past_key_values.0.key"].shape == (2, 2, 4, 8)
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(np.concatenate([logits, last], axis=1), want, atol=1e-4)


def test_onnx_greedy_equals_torch_greedy(exported):
    model, result = exported
    got = OnnxLM(open_session(result.path)).greedy([5, 6], 7)
    want = torch_greedy(model, [5, 6], 7)
    assert got.tokens == want.tokens and len(got.tokens) == 7
    assert len(got.step_logits) == 7 and got.step_logits[0].shape == (2, 61)


def test_multi_query_attention_exports(tmp_path):
    result = export_lm(student(n_kv_heads=1), tmp_path / "mqa.onnx", PROMPTS[:1], new_tokens=3)
    assert result.kv_heads == 1 and result.greedy_identical


class _DiffersFromTrace(torch.nn.Module):
    """Eager PyTorch adds a bias the traced graph does not have: a real disagreement."""

    def __init__(self, inner: LMStudent) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, past_key_values=None, use_cache=False):
        logits, cache = self.inner(input_ids, past_key_values, use_cache=True)
        if not torch.jit.is_tracing():
            logits = logits + torch.linspace(0, 1, logits.shape[-1])
        return logits, cache


def test_parity_failure_raises_and_writes_nothing(tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(ParityError, match="no file written") as info:
        export_lm(_DiffersFromTrace(student()), out, PROMPTS[:1], new_tokens=3)
    assert info.value.exit_code == 6
    assert list(tmp_path.iterdir()) == []


def test_export_rejects_empty_prompts(tmp_path):
    with pytest.raises(BadInputError, match="non-empty prompt"):
        export_lm(student(), tmp_path / "x.onnx", [[]])


@pytest.mark.parametrize("mode", MODES)
def test_each_quantized_variant_runs_is_smaller_and_close(exported, tmp_path, mode):
    model, result = exported
    out = quantize_lm(result.path, LMQuantConfig(mode, block_size=16), tmp_path / f"{mode}.onnx")
    assert out.stat().st_size < Path(result.path).stat().st_size
    diff, _same = lm_parity(out, model, PROMPTS[:2], 4)
    assert diff < 0.2  # weight-only rounding on a random model: close, not equal
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    if mode != "dynamic_int8":
        assert {"MatMulNBits", "GatherBlockQuantized"} <= ops


def test_int4_is_smaller_than_int8_on_a_wider_model(tmp_path):
    torch.manual_seed(0)
    model = LMStudent(LMStudentConfig(vocab_size=64, dim=128, n_layers=1, n_heads=4, n_kv_heads=4,
                                      ffn_hidden=256, context=16)).eval()
    fp32 = export_lm(model, tmp_path / "m.onnx", [[1, 2]], new_tokens=2).path
    sizes = {b: quantize_lm(fp32, LMQuantConfig(b), tmp_path / f"{b}.onnx").stat().st_size
             for b in ("int4", "int8")}
    full = (tmp_path / "m.onnx").stat().st_size
    assert sizes["int4"] < sizes["int8"] < 0.5 * full  # int8 ~4x smaller, less the graph itself
    kept = quantize_lm(fp32, LMQuantConfig("int4", embeddings=False), tmp_path / "e.onnx")
    assert sizes["int4"] < kept.stat().st_size  # the fp32 table costs


def test_quant_config_rejects_bad_values():
    with pytest.raises(BadInputError, match="mode must be one of"):
        LMQuantConfig("int3")
    with pytest.raises(BadInputError, match="power of 2"):
        LMQuantConfig("int4", block_size=24)


def _v(name, ppl, tps, size=100):
    return LMVariant(name, f"{name}.onnx", size, ppl, tps)


def test_choice_is_the_fastest_within_the_perplexity_allowance():
    variants = [_v("fp32", 10.0, 50), _v("int8-b32", 10.2, 80, 40), _v("int4-b32", 11.5, 120, 20)]
    chosen = choose_lm_variant(variants, max_increase=0.05)
    assert chosen.chosen.name == "int8-b32" and "over the limit: int4-b32" in chosen.reason
    assert choose_lm_variant(variants, max_increase=0.2).chosen.name == "int4-b32"
    assert choose_lm_variant(variants, max_increase=0.0).chosen.name == "fp32"
    # equal speed: the smaller file wins
    tie = [_v("fp32", 10.0, 50, 100), _v("int8-b32", 10.0, 50, 40)]
    assert choose_lm_variant(tie, 0.1).chosen.name == "int8-b32"


def test_select_quantizes_measures_and_chooses(exported, tmp_path):
    _model, result = exported
    speed = {"fp32": 1.0, "int8-b16": 2.0, "int4-b16": 3.0}

    def measure(name, path):
        return LMVariant(name, str(path), path.stat().st_size, 10.0, speed[name])

    got = select_lm_quantization(result.path, tmp_path,
                                 [LMQuantConfig("int8", 16), LMQuantConfig("int4", 16)],
                                 measure, max_increase=0.01)
    assert got.chosen.name == "int4-b16" and (tmp_path / "student-int4-b16.onnx").is_file()


def test_tied_table_is_stored_once_and_the_size_estimate_holds(tmp_path):
    from edgekd.lm.sizing import file_bytes

    torch.manual_seed(0)
    cfg = LMStudentConfig(vocab_size=512, dim=128, n_layers=2, n_heads=4, n_kv_heads=2,
                          ffn_hidden=352, context=32)
    result = export_lm(LMStudent(cfg).eval(), tmp_path / "m.onnx", [[1, 2]], new_tokens=2)
    graph = onnx.load(result.path).graph
    shapes = [tuple(t.dims) for t in graph.initializer]
    assert shapes.count((512, 128)) == 1 and (128, 512) not in shapes
    assert any(n.op_type == "Gemm" for n in graph.node)
    for bits, mode in ((32, None), (4, "int4"), (8, "int8")):  # int8 here: weight-only
        path = Path(result.path) if mode is None else quantize_lm(
            result.path, LMQuantConfig(mode), tmp_path / f"{mode}.onnx")
        # the weights as stored; the rest of the file is the graph itself (~100 KB here)
        stored = sum(len(t.raw_data) for t in onnx.load(str(path)).graph.initializer)
        assert file_bytes(cfg, bits) == pytest.approx(stored, rel=0.02), mode


def test_quantize_table_by_hand():
    from edgekd.lm.quantize import quantize_table

    # one row, one block of 16: max |w| = 7 -> scale 1 at 4 bits; codes w + 8, two to a byte
    row = np.array([[-7, -1, 0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0.4]], dtype=np.float32)
    data, scales = quantize_table(row, bits=4, block_size=16)
    assert scales.tolist() == [[1.0]]
    codes = [int(b) & 0xF for b in data[0] for b in (b, b >> 4)]
    assert codes == [1, 7, 8, 9, 10, 11, 12, 13, 14, 15, 8, 8, 8, 8, 8, 8]
    data8, scales8 = quantize_table(row, bits=8, block_size=16)
    assert scales8[0, 0] == pytest.approx(7 / 127) and data8[0, 0] == 128 - 127
    zero, zscale = quantize_table(np.zeros((1, 16), np.float32), 4, 16)
    assert zscale.tolist() == [[1.0]] and set(zero.ravel()) == {8 | 8 << 4}


# --- the teacher in ONNX, for the benchmark (issue 18, h24) ---------------------------------------


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_a_transformers_teacher_exports_without_a_cache(kind, tmp_path):
    from lm_fixtures import tiny_gpt2, tiny_llama

    from edgekd.lm.export import export_teacher
    from edgekd.lm.teacher import HFLogits

    model = {"llama": tiny_llama, "gpt2": tiny_gpt2}[kind](vocab=97)
    attention = model.config._attn_implementation
    result = export_teacher(HFLogits(model), tmp_path / "teacher.onnx", PROMPTS)
    assert result.exported and result.greedy_identical and result.max_abs_diff < 1e-4
    assert model.config._attn_implementation == attention  # the teacher is left as it was
    lm = OnnxLM(open_session(result.path))
    assert lm.recompute and lm.layers == 0
    # batch 2 and 11 positions, neither of them the traced shape
    ids = np.random.default_rng(0).integers(0, 97, (2, 11))
    want = model(input_ids=torch.from_numpy(ids)).logits.detach().numpy()
    got, seen = lm.step(ids[:, :7], lm.empty_cache(2))
    more, seen = lm.step(ids[:, 7:], seen)
    np.testing.assert_allclose(np.concatenate([got, more], 1), want, atol=1e-4)
    assert seen.shape == (2, 11)


def test_a_teacher_that_does_not_export_says_why_and_writes_nothing(tmp_path):
    from edgekd.lm.export import export_teacher

    class Branchy(torch.nn.Module):  # a Python `if` on a tensor value: the tracer would freeze it
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.head = torch.nn.Embedding(13, 8), torch.nn.Linear(8, 13)

        def forward(self, input_ids):
            hidden = self.embed(input_ids)
            return self.head(hidden if hidden.sum() > 0 else -hidden)

    result = export_teacher(Branchy(), tmp_path / "teacher.onnx", [[1, 2]])
    assert not result.exported and "does not export" in result.reason
    assert "\n" not in result.reason
    assert not (tmp_path / "teacher.onnx").exists()


def test_the_teacher_export_is_cached_by_its_weights(tmp_path, monkeypatch):
    from lm_fixtures import tiny_llama

    from edgekd.lm import export as lm_export
    from edgekd.lm.teacher import HFLogits

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    teacher = HFLogits(tiny_llama(vocab=97))
    first = lm_export.cached_teacher_export(teacher, PROMPTS)
    calls = []
    monkeypatch.setattr(lm_export, "export_teacher", lambda *a, **k: calls.append(a))
    again = lm_export.cached_teacher_export(teacher, PROMPTS)
    assert first.exported and again == first and not calls
