"""edgekd.losses against reference definitions, hand-worked values and generic properties.

The ``_ref_*`` oracles restate, step by step, the computations of the reference implementations
(RepDistiller @ 1e2f816 ``distiller_zoo/{AT,SP,RKD,PKT,FitNet}.py``; mdistiller @ e8c5bb3
``mdistiller/distillers/DKD.py`` ``dkd_loss``), including their numerically naive parts
(pdist via |a|^2 + |b|^2 - 2ab, log of summed softmax probabilities, the -1000 target mask), so
they are only used on ordinary-sized random inputs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import edgekd.losses as losses
from edgekd.losses import at, dkd, fitnet, kd, mse_logits, pkt, rkd, sp

# Two cores are shared between workers: keep torch from oversubscribing them.
torch.set_num_threads(1)

NUM_CLASSES = 5
TOL = dict(rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- reference oracles


def _ref_fitnet(f_s, f_t):
    return ((f_s - f_t) ** 2).mean()  # nn.MSELoss() with its default 'mean' reduction


def _ref_at(f_s, f_t, p=2):
    def attention(f):
        return F.normalize(f.pow(p).mean(1).view(f.size(0), -1))

    h_s, h_t = f_s.shape[2], f_t.shape[2]  # the reference looks at heights only, pools square
    if h_s > h_t:
        f_s = F.adaptive_avg_pool2d(f_s, (h_t, h_t))
    elif h_s < h_t:
        f_t = F.adaptive_avg_pool2d(f_t, (h_s, h_s))
    return (attention(f_s) - attention(f_t)).pow(2).mean()


def _ref_sp(f_s, f_t):
    b = f_s.shape[0]
    g_s = F.normalize(torch.mm(f_s.view(b, -1), f_s.view(b, -1).t()))
    g_t = F.normalize(torch.mm(f_t.view(b, -1), f_t.view(b, -1).t()))
    g_diff = g_t - g_s
    return (g_diff * g_diff).view(-1, 1).sum(0) / (b * b)  # shape (1,) in the reference


def _ref_pdist(e, eps=1e-12):
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt().clone()
    d[range(len(e)), range(len(e))] = 0
    return d


def _ref_rkd(f_s, f_t, w_d=25.0, w_a=50.0):
    s = f_s.view(f_s.shape[0], -1)
    t = f_t.view(f_t.shape[0], -1)
    t_d = _ref_pdist(t)
    t_d = t_d / t_d[t_d > 0].mean()
    d = _ref_pdist(s)
    d = d / d[d > 0].mean()
    loss_d = F.smooth_l1_loss(d, t_d)

    def angles(x):
        u = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)
        return torch.bmm(u, u.transpose(1, 2)).view(-1)

    loss_a = F.smooth_l1_loss(angles(s), angles(t))
    return w_d * loss_d + w_a * loss_a


def _ref_pkt(out, tgt, eps=1e-7):
    def probs(x):
        x = x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)
        x = torch.where(x != x, torch.zeros_like(x), x)  # the reference zeroes NaNs in place
        sim = (torch.mm(x, x.t()) + 1.0) / 2.0
        return sim / torch.sum(sim, dim=1, keepdim=True)

    p_s, p_t = probs(out), probs(tgt)
    return torch.mean(p_t * torch.log((p_t + eps) / (p_s + eps)))


def _ref_dkd(l_s, l_t, target, alpha, beta, temperature):
    gt = torch.zeros_like(l_s).scatter_(1, target.reshape(-1, 1), 1).bool()
    other = torch.ones_like(l_s).scatter_(1, target.reshape(-1, 1), 0).bool()

    def binary(p):
        return torch.cat([(p * gt).sum(1, keepdim=True), (p * other).sum(1, keepdim=True)], 1)

    b = target.shape[0]
    p_s = binary(F.softmax(l_s / temperature, dim=1))
    p_t = binary(F.softmax(l_t / temperature, dim=1))
    tckd = F.kl_div(torch.log(p_s), p_t, reduction="sum") * temperature**2 / b
    p_t2 = F.softmax(l_t / temperature - 1000.0 * gt, dim=1)
    log_p_s2 = F.log_softmax(l_s / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_p_s2, p_t2, reduction="sum") * temperature**2 / b
    return alpha * tckd + beta * nckd


# ---------------------------------------------------------------- inputs per loss

# name -> (student shape, teacher shape, needs class targets). Shapes differ where the loss allows
# it (channels / feature sizes), so the reference checks cover that too. A new method that
# publishes a loss function (its ``loss_function``, see edgekd.losses) needs one row here and
# nothing else in this file: the generic property tests below run over this table, and
# test_every_exported_loss_has_test_inputs fails until the row is there.
SHAPES = {
    "kd": ((4, NUM_CLASSES), (4, NUM_CLASSES), False),
    "mse_logits": ((4, NUM_CLASSES), (4, NUM_CLASSES), False),
    "dkd": ((4, NUM_CLASSES), (4, NUM_CLASSES), True),
    "fitnet": ((3, 4, 5, 5), (3, 4, 5, 5), False),
    "at": ((3, 4, 6, 6), (3, 8, 6, 6), False),
    "sp": ((4, 3, 4, 4), (4, 6, 2, 2), False),
    "rkd": ((5, 7), (5, 11), False),
    "pkt": ((5, 7), (5, 11), False),
    # language models: per-token losses over [batch, positions, vocabulary]
    "forward_kl": ((2, 3, NUM_CLASSES), (2, 3, NUM_CLASSES), False),
    "reverse_kl": ((2, 3, NUM_CLASSES), (2, 3, NUM_CLASSES), False),
    "generalized_jsd": ((2, 3, NUM_CLASSES), (2, 3, NUM_CLASSES), False),
}


def _inputs(name, seed=0, scale=1.0, same=False):
    """(student, teacher, extra args) for a loss; ``same`` gives the teacher the student's shape."""
    g = torch.Generator().manual_seed(seed)
    s_shape, t_shape, needs_target = SHAPES[name]
    student = scale * torch.randn(s_shape, generator=g)
    teacher = scale * torch.randn(s_shape if same else t_shape, generator=g)
    extra = ()
    if needs_target:
        extra = (torch.randint(0, NUM_CLASSES, (s_shape[0],), generator=g),)
    return student, teacher, extra


def test_every_exported_loss_has_test_inputs():
    """``edgekd.losses`` is filled from the method registry; ``SHAPES`` is the one row per loss
    function that a new method adds to the tests."""
    assert set(SHAPES) == set(losses.__all__)


# ---------------------------------------------------------------- against the references


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "s_shape,t_shape", [((2, 3), (2, 3)), ((4, 2, 3, 3), (4, 2, 3, 3)), ((1, 10), (1, 10))]
)
def test_fitnet_matches_reference(seed, s_shape, t_shape):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(s_shape, generator=g), torch.randn(t_shape, generator=g)
    torch.testing.assert_close(fitnet(s, t), _ref_fitnet(s, t), **TOL)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize(
    "s_shape,t_shape",
    [
        ((3, 4, 6, 6), (3, 8, 6, 6)),
        ((2, 4, 8, 8), (2, 16, 4, 4)),  # student larger: pooled down
        ((2, 4, 3, 3), (2, 5, 7, 7)),  # teacher larger, not a divisor
    ],
)
def test_at_matches_reference(seed, p, s_shape, t_shape):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(s_shape, generator=g), torch.randn(t_shape, generator=g)
    torch.testing.assert_close(at(s, t, p=p), _ref_at(s, t, p=p), **TOL)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "s_shape,t_shape", [((4, 3, 4, 4), (4, 6, 2, 2)), ((2, 5), (2, 5)), ((6, 8), (6, 3, 2))]
)
def test_sp_matches_reference(seed, s_shape, t_shape):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(s_shape, generator=g), torch.randn(t_shape, generator=g)
    torch.testing.assert_close(sp(s, t), _ref_sp(s, t).squeeze(0), **TOL)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("weights", [(25.0, 50.0), (1.0, 0.0), (0.0, 1.0)])
@pytest.mark.parametrize(
    "s_shape,t_shape", [((5, 7), (5, 11)), ((2, 3), (2, 3)), ((4, 2, 3), (4, 5))]
)
def test_rkd_matches_reference(seed, weights, s_shape, t_shape):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(s_shape, generator=g), torch.randn(t_shape, generator=g)
    w_d, w_a = weights
    torch.testing.assert_close(
        rkd(s, t, distance_weight=w_d, angle_weight=w_a), _ref_rkd(s, t, w_d, w_a), **TOL
    )


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("s_shape,t_shape", [((5, 7), (5, 11)), ((2, 3), (2, 3)), ((8, 4), (8, 4))])
def test_pkt_matches_reference(seed, s_shape, t_shape):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(s_shape, generator=g), torch.randn(t_shape, generator=g)
    torch.testing.assert_close(pkt(s, t), _ref_pkt(s, t), **TOL)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "alpha,beta,temperature", [(1.0, 8.0, 4.0), (1.0, 0.0, 1.0), (0.0, 1.0, 2.0), (0.5, 0.5, 1.0)]
)
@pytest.mark.parametrize("batch,classes", [(4, 5), (3, 2), (6, 10)])
def test_dkd_matches_reference(seed, alpha, beta, temperature, batch, classes):
    g = torch.Generator().manual_seed(seed)
    s = 3 * torch.randn(batch, classes, generator=g)
    t = 3 * torch.randn(batch, classes, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    torch.testing.assert_close(
        dkd(s, t, y, alpha=alpha, beta=beta, temperature=temperature),
        _ref_dkd(s, t, y, alpha, beta, temperature),
        **TOL,
    )


# ---------------------------------------------------------------- hand-worked values


def _py_softmax(xs):
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


def _py_kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_plain_python_softmax_matches_worked_values():
    # The helper used for the kd expectations below, checked against values worked by hand.
    assert [round(v, 3) for v in _py_softmax([2, 1, 5, 3])] == [0.041, 0.015, 0.831, 0.112]
    assert [round(v, 3) for v in _py_softmax([5.0 / 5, 2.0 / 5, 0.1 / 5])] == [0.520, 0.285, 0.195]


def test_kd_two_class_by_hand():
    # Teacher logits [0, 2 ln 3] at T=2 give p = [1/4, 3/4]; a zero student gives q = [1/2, 1/2].
    expected = 2.0**2 * (0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5))
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[0.0, 2 * math.log(3.0)]])
    assert kd(student, teacher, temperature=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_kd_three_class_temperature_five_batch_mean():
    teacher = [5.0, 2.0, 0.1]
    students = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
    p = _py_softmax([x / 5 for x in teacher])  # [0.520, 0.285, 0.195]
    per_sample = [25 * _py_kl(p, _py_softmax([x / 5 for x in s])) for s in students]
    got = kd(torch.tensor(students), torch.tensor([teacher, teacher]), temperature=5.0)
    assert got.item() == pytest.approx(sum(per_sample) / 2, rel=1e-5)


def test_kd_four_class_temperature_one():
    p = _py_softmax([2, 1, 5, 3])  # [0.041, 0.015, 0.831, 0.112]
    expected = _py_kl(p, [0.25] * 4)  # against a uniform student
    got = kd(torch.zeros(1, 4), torch.tensor([[2.0, 1.0, 5.0, 3.0]]), temperature=1.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_mse_logits_by_hand():
    # differences 0, 2, 3, 0 -> (0 + 4 + 9 + 0) / 4
    got = mse_logits(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    assert got.item() == pytest.approx(3.25)


def test_sp_two_by_two_by_hand():
    # Student rows orthogonal: G_s = I. Teacher rows equal: G_t = all ones, rows normalised to
    # 1/sqrt(2). Squared differences: 2 * (1 - 1/sqrt(2))^2 + 2 * (1/2) = 4 - 2 sqrt(2); / B^2 = 4.
    expected = (4 - 2 * math.sqrt(2)) / 4
    got = sp(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_rkd_distance_term_on_three_collinear_points_by_hand():
    # Student at 0, 1, 2: pair distances 1, 2, 1, mean over the 6 off-diagonal entries 4/3,
    # normalised 3/4, 3/2, 3/4. Teacher at 0, 1, 3: distances 1, 3, 2, mean 2, normalised
    # 1/2, 3/2, 1. Differences 1/4, 0, -1/4: smooth-L1 0.5 * x^2 = 1/32 for two pairs, each
    # appearing twice in the 3 x 3 matrix: 4/32 over 9 entries = 1/72.
    # Same ordering along one line means every angle cosine agrees, so the angle term is 0.
    s = torch.tensor([[0.0], [1.0], [2.0]])
    t = torch.tensor([[0.0], [1.0], [3.0]])
    assert rkd(s, t, distance_weight=1.0, angle_weight=0.0).item() == pytest.approx(1 / 72)
    assert rkd(s, t, distance_weight=0.0, angle_weight=1.0).item() == pytest.approx(0.0, abs=1e-7)
    assert rkd(s, t).item() == pytest.approx(25.0 / 72, rel=1e-5)


# ---------------------------------------------------------------- generic properties


@pytest.mark.parametrize("name", losses.__all__)
def test_zero_when_student_equals_teacher(name):
    loss = getattr(losses, name)
    student, _, extra = _inputs(name, same=True)
    assert loss(student, student.clone(), *extra).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.0, 1.0)])
def test_dkd_parts_each_zero_when_equal(alpha, beta):
    student, _, (target,) = _inputs("dkd", seed=3, same=True)
    got = dkd(student, student.clone(), target, alpha=alpha, beta=beta)
    assert got.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", losses.__all__)
def test_gradient_reaches_student_only(name):
    loss = getattr(losses, name)
    student, teacher, extra = _inputs(name, seed=1)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    loss(student, teacher, *extra).backward()
    assert teacher.grad is None
    assert student.grad is not None
    assert torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0


@pytest.mark.parametrize("scale", [1e4, -1e4])
@pytest.mark.parametrize("name", losses.__all__)
def test_finite_on_extreme_inputs(name, scale):
    loss = getattr(losses, name)
    student, teacher, extra = _inputs(name, seed=2, scale=scale)
    student.requires_grad_(True)
    value = loss(student, teacher, *extra)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(student.grad).all()


FEATURE_LOSSES = ["fitnet", "at", "sp", "rkd", "pkt"]


@pytest.mark.parametrize("which", ["student", "teacher", "both"])
@pytest.mark.parametrize("name", FEATURE_LOSSES)
def test_finite_on_zero_features(name, which):
    loss = getattr(losses, name)
    student, teacher, extra = _inputs(name, seed=4)
    if which in ("student", "both"):
        student = torch.zeros_like(student)
    if which in ("teacher", "both"):
        teacher = torch.zeros_like(teacher)
    student.requires_grad_(True)
    value = loss(student, teacher, *extra)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(student.grad).all()


# ---------------------------------------------------------------- specifics and errors


def test_dkd_non_target_part_ignores_target_logit_even_when_huge():
    # NCKD is a distribution over the non-target classes only. mdistiller masks the target with
    # -1000, which stops working once |logit / T| nears 1000; ours must not depend on it at all.
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    y = torch.tensor([0, 3, 5])
    base = dkd(s, t, y, alpha=0.0, beta=1.0)
    s_huge, t_huge = s.clone(), t.clone()
    s_huge[torch.arange(3), y] = 1e4
    t_huge[torch.arange(3), y] = -1e4
    torch.testing.assert_close(dkd(s_huge, t_huge, y, alpha=0.0, beta=1.0), base, **TOL)


def test_at_pools_non_square_maps_to_the_smaller_size():
    g = torch.Generator().manual_seed(6)
    s, t = torch.randn(2, 3, 4, 6, generator=g), torch.randn(2, 5, 8, 3, generator=g)
    expected = _ref_at(F.adaptive_avg_pool2d(s, (4, 3)), F.adaptive_avg_pool2d(t, (4, 3)))
    torch.testing.assert_close(at(s, t), expected, **TOL)


def test_rkd_distances_stay_accurate_far_from_the_origin():
    # Offset 1e4, spread 1: the reference's |a|^2 + |b|^2 - 2ab distances cancel in float32.
    g = torch.Generator().manual_seed(7)
    s, t = torch.randn(6, 8, generator=g) + 1e4, torch.randn(6, 8, generator=g)
    expected = _ref_rkd(s.double(), t.double()).float()
    torch.testing.assert_close(rkd(s, t), expected, rtol=1e-4, atol=1e-4)


def test_fitnet_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4, 3, 3\).*\(2, 8, 3, 3\)"):
        fitnet(torch.zeros(2, 4, 3, 3), torch.zeros(2, 8, 3, 3))


@pytest.mark.parametrize("name", ["kd", "mse_logits", "dkd"])
def test_logit_losses_refuse_to_broadcast(name):
    loss = getattr(losses, name)
    extra = (torch.zeros(2, dtype=torch.long),) if name == "dkd" else ()
    with pytest.raises(ValueError, match="shape"):
        loss(torch.zeros(2, 5), torch.zeros(1, 5), *extra)


@pytest.mark.parametrize("name", ["at", "sp", "rkd", "pkt"])
def test_feature_losses_need_equal_batch(name):
    loss = getattr(losses, name)
    with pytest.raises(ValueError, match="batch"):
        loss(torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4))


def test_rkd_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        rkd(torch.ones(1, 4), torch.ones(1, 4))


def test_dkd_rejects_wrong_number_of_targets():
    with pytest.raises(ValueError, match="targets"):
        dkd(torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(3, dtype=torch.long))
