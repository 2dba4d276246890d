"""Teachers: the embedded default (trained once on the training split and cached) and helpers.

The default teacher is deliberately larger than any student the shipped targets allow, so that the
report shows what distillation keeps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

from torch import nn

from edgekd.cache import cache_dir, cache_key
from edgekd.data import DataBundle
from edgekd.progress import status
from edgekd.students import build_student
from edgekd.students.checkpoint import load_model, save_model
from edgekd.train.device import resolve_device
from edgekd.train.loop import TrainConfig, accuracy, predict_logits, train_student

# Per input kind: (family, width, depth) of the default teacher. The image teacher (557k
# parameters) is large enough that the shipped targets' own budgets, not the share-of-teacher
# rule (a student is at most 25% of its teacher), stop the student on the quick-start digits:
# iot, mobile and car get different students (README, "Students sized to the target").
DEFAULT_TEACHERS = {
    "image": ("cnn", 4.0, 4),
    "sequence": ("cnn1d", 4.0, 3),
    "vector": ("mlp", 8.0, 3),
}
# Images with both sides at least this long get a stride-2 stem (the map halved before any
# block, the same 557k weights). On 20,000 jittered 28x28 digits (1 thread, interleaved, load
# 14) a training step of the image teacher cost 0.22 s against 0.93 s with the stride-1 stem
# (4.3x less), and after 340 steps it reached 99.87% on 3,000 fresh digits against 99.83%. 8x8
# digits keep the stride-1 stem and their teacher (and iot/mobile/car their students).
STRIDED_STEM_MIN_SIDE = 24
# Per input kind: (optimizer steps, augmentation level, peak learning rate, training samples the
# steps were measured on) of the default teacher's training. A teacher trained on the same
# jittered views it later answers on (edgekd.distill.views) teaches them better. On MNIST-1D
# (3,601 training samples, 57 steps an epoch; seeded, 1 thread): 100 epochs (5,700 steps) of shift
# + noise at lr 1e-2 reached 98.8-99.0% test accuracy over seeds, at 3e-3 97.7-98.7%; 200 epochs,
# a wider (141k) or deeper (84k) CNN did no better (98.7-98.8%). Without augmentation, 40 epochs
# reached 97.7-98.1%. Images: on digits the cnn width 4 depth 4 teacher reached 100% validation
# and 99.4% test accuracy after 340 steps (18 s on a loaded 2-core host; today's split: 1,258
# training samples, 20 steps an epoch, 17 epochs), the earlier width 2 teacher 99.7% after 40.
# Vectors: not measured, 40 epochs at MNIST-1D's size.
TEACHER_RECIPES = {
    "image": (340, "light", 3e-3, 1_258),
    "sequence": (5_700, "light", 1e-2, 3_601),
    "vector": (2_280, "none", 3e-3, 3_601),
}
# A larger set gets more steps, sub-linearly: a quarter more for every ten times the recipe's
# samples (1 + log10(n / recipe's n) / 4 times the recipe's steps), at least the recipe's and at
# most MAX_TEACHER_STEP_FACTOR times them; the last epoch stops at the budget, mid-epoch
# (TrainConfig.max_steps), so a large set is not trained in whole epochs. Measured (seeded, 1
# thread, load 5-13) on 20,000 jittered 28x28 digits (14,000 training samples, 219 steps an
# epoch): 340 steps reached 99.95% validation and 99.83% accuracy on 3,000 fresh digits (210 s),
# 680 steps 100% and 100% (716 s); this rule gives 429 (before: 2 whole epochs, 438 steps, 785 s
# of a 1,148 s default distill at load about 10). 60,000 digits: 470 steps (before: 1,314).
TEACHER_STEPS_PER_DECADE = 0.25
MAX_TEACHER_STEP_FACTOR = 2.0


def teacher_steps(kind: str, train_n: int) -> int:
    """The default teacher's optimizer steps on ``train_n`` training samples of ``kind`` inputs.

    >>> teacher_steps("image", 1_258), teacher_steps("image", 12_580), teacher_steps("image", 100)
    (340, 425, 340)
    >>> teacher_steps("sequence", 3_601), teacher_steps("image", 10**9)
    (5700, 680)
    """
    steps, _, _, measured_on = TEACHER_RECIPES[kind]
    decades = math.log10(max(1.0, train_n / measured_on))
    factor = min(1.0 + TEACHER_STEPS_PER_DECADE * decades, MAX_TEACHER_STEP_FACTOR)
    return round(steps * factor)


def teacher_schedule(kind: str, train_n: int, batch_size: int = 64) -> tuple[int, int]:
    """(epochs, steps) of the default teacher: its step budget and the epochs that hold it (the
    last one cut at the budget unless the budget is whole epochs).

    >>> teacher_schedule("image", 1_258), teacher_schedule("image", 42_000)
    ((17, 340), (1, 470))
    """
    steps = teacher_steps(kind, train_n)
    return math.ceil(steps / math.ceil(train_n / batch_size)), steps


@dataclass(frozen=True)
class TeacherInfo:
    source: str  # "default (cached)", "default (trained now)", or the user's spec
    path: str
    params: int
    val_accuracy: float
    train_seconds: float

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def default_teacher(
    data: DataBundle, seed: int = 0, epochs: int | None = None, dist=None, device: str = "cpu"
) -> tuple[nn.Module, TeacherInfo]:
    """Train (or reuse from the cache) the default teacher for this data set; ``epochs`` None:
    the recipe's step budget sized to the data (``teacher_schedule``). ``device``: where it trains
    (``--device``; ``edgekd.train.device``), as a student would.

    ``dist`` (``edgekd.train.distributed.DistContext``): the workers train it together (its own
    cache entry: BatchNorm statistics are per worker) unless every one of them has it cached.
    """
    import torch

    from edgekd.data.augment import make_augmenter

    if data.input_kind not in DEFAULT_TEACHERS or len(data.input_names) != 1:
        from edgekd.errors import BadInputError

        raise BadInputError(
            f"no default teacher for {data.input_kind} inputs {data.input_names}; pass --teacher"
        )
    family, width, depth = DEFAULT_TEACHERS[data.input_kind]
    _, level, lr, _ = TEACHER_RECIPES[data.input_kind]
    shape = data.sample_shapes[data.input_names[0]]
    options = teacher_options(data.input_kind, shape)
    planned, steps = teacher_schedule(data.input_kind, data.train.n)
    config = TrainConfig(epochs=epochs or planned, lr=lr, seed=seed, alpha=1.0, device=device)
    # A budget that is not whole epochs cuts the last one (--teacher-epochs: whole epochs)
    whole = steps == planned * math.ceil(data.train.n / config.batch_size)
    cut = None if epochs or whole else steps
    config = dataclasses.replace(config, max_steps=cut)
    key = cache_key(
        data=data.train.fingerprint(),
        val=data.val.fingerprint(),
        family=family,
        width=width,
        depth=depth,
        # Keyed by where it trains (cpu or cuda), not how that was asked (auto, cuda:1).
        config=dataclasses.replace(config, device=resolve_device(device).type),
        augment=level,
        torch=torch.__version__.split("+")[0],
        v=3,  # 3: initial weights seeded
        **({} if cut is None else {"max_steps": cut}),  # keys of whole-epoch budgets stay
        **options,  # (none on small images: their keys stay)
        **({} if dist is None else {"workers": dist.world_size}),
    )
    path = cache_dir() / f"teacher-{data.name}-{key}.safetensors"
    if path.is_file() if dist is None else dist.all(path.is_file()):
        model = load_model(path)
        acc = accuracy(predict_logits(model, data.val), data.val.y)
        return model, TeacherInfo("default (cached)", str(path), _params(model), acc, 0.0)
    status(
        f"training the default teacher ({family}, width {width}, depth {depth}; "
        f"{_schedule_words(config, data.train.n)}, augmentation {level}"
        f"{', stride-2 stem' if options else ''}) on {data.name}"
    )
    torch.manual_seed(seed)  # the initial weights too: every machine trains the same teacher
    model = build_student(family, shape, data.num_classes, width, depth, **options)
    start = time.perf_counter()
    augment = make_augmenter(data.input_kind, level)  # label-preserving jitter only
    train_student(
        model, data.train, data.val, config, description="teacher", augment=augment, dist=dist
    )
    seconds = time.perf_counter() - start
    if dist is None or dist.is_main:
        save_model(model, path)
    acc = accuracy(predict_logits(model, data.val), data.val.y)
    return model, TeacherInfo("default (trained now)", str(path), _params(model), acc, seconds)


def default_teacher_params(data: DataBundle) -> int | None:
    """Parameters of the default teacher ``distill`` would train for this data (built, not
    trained); None where there is no default teacher. Sizing bounds the student by it."""
    model = default_teacher_model(data)
    return None if model is None else _params(model)


def default_teacher_model(data: DataBundle) -> nn.Module | None:
    """The default teacher for this data, built (fresh weights), not trained; None where there is
    none. Its structure is evidence for the student's family (``edgekd.sizing.evidence``)."""
    if data.input_kind not in DEFAULT_TEACHERS or len(data.input_names) != 1:
        return None
    family, width, depth = DEFAULT_TEACHERS[data.input_kind]
    shape = data.sample_shapes[data.input_names[0]]
    options = teacher_options(data.input_kind, shape)
    return build_student(family, shape, data.num_classes, width, depth, **options)


def teacher_options(kind: str, shape: tuple[int, ...]) -> dict[str, int]:
    """Build options of the default teacher beyond its family, width and depth: a stride-2 stem
    for images at least ``STRIDED_STEM_MIN_SIDE`` on both sides (per-step cost, see there).

    >>> teacher_options("image", (1, 28, 28)), teacher_options("image", (1, 8, 8))
    ({'stem_stride': 2}, {})
    """
    if kind == "image" and min(shape[1:]) >= STRIDED_STEM_MIN_SIDE:
        return {"stem_stride": 2}
    return {}


def _schedule_words(config: TrainConfig, train_n: int) -> str:
    total = config.total_steps(math.ceil(train_n / config.batch_size))
    return f"{config.epochs} epochs" + ("" if config.max_steps is None else f", {total} steps")


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
