"""Patient and consistent teaching: the teacher sees exactly the student's augmented view, seeds
change and repeat results, early stopping stops, the augmentation defaults, and tuning (budget,
pruning, reproducible settings that `edgekd distill --config` accepts)."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from toydata import FAST, PATCHES, tiny_student, toy_bundle, toy_teacher
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.data.augment import make_augmenter
from edgekd.distill.methods import make_method
from edgekd.distill.strategies import DistillJob, StrategyOptions, run_strategy
from edgekd.distill.views import choose_augment
from edgekd.errors import BadInputError
from edgekd.train.loop import TrainConfig, live_teacher, train_student
from edgekd.tune import RandomSearcher, TuneSettings, median_stop, tune

runner = CliRunner()


@pytest.fixture(scope="module")
def toy():
    return toy_bundle()


@pytest.fixture(scope="module")
def teacher(toy):
    return toy_teacher(toy)


class Recorder(nn.Module):
    """Wraps a model and keeps a copy of every input it is called on (in training mode only,
    with ``training_only``)."""

    def __init__(self, model: nn.Module, training_only: bool = False) -> None:
        super().__init__()
        self.model, self.training_only, self.seen = model, training_only, []

    def forward(self, x):
        if self.training or not self.training_only:
            self.seen.append(x.detach().clone())
        return self.model(x)


def test_teacher_sees_exactly_the_students_augmented_view(toy, teacher) -> None:
    student = Recorder(tiny_student(), training_only=True)
    watcher = Recorder(teacher)
    augment = make_augmenter("image", "strong")
    config = replace(FAST, epochs=2)
    train_student(
        student, toy.train, None, config, make_method("kd"), live_teacher(watcher), augment=augment
    )
    steps = 2 * (toy.train.n // config.batch_size)
    assert len(student.seen) == len(watcher.seen) == steps
    raw = [torch.from_numpy(toy.train.inputs["x"][i]) for i in range(toy.train.n)]
    for s, t in zip(student.seen, watcher.seen, strict=True):
        assert torch.equal(s, t)  # the same tensor values, step by step
        # ... and a view no stored sample is (shifted, noised, mixed)
        assert not any(torch.equal(s[0], r) for r in raw)


def test_the_strategy_path_teaches_on_the_augmented_view(toy, teacher) -> None:
    student = Recorder(tiny_student(), training_only=True)
    watcher = Recorder(teacher)
    job = DistillJob(watcher, student, toy, FAST, "kd", {}, StrategyOptions(augment="light"))
    result = run_strategy("offline", job)
    train_views = [t for t in watcher.seen if len(t) == FAST.batch_size]  # not validation passes
    assert len(train_views) == len(student.seen) > 0
    assert all(torch.equal(s, t) for s, t in zip(student.seen, train_views, strict=True))
    assert "function matching" in result.info["teacher_signal"]
    assert result.info["best_epoch_by"] == "validation agreement with the teacher"


def test_offline_notes_an_early_stop_and_reports_every_epoch(toy, teacher, monkeypatch) -> None:
    """What tune and the report read from the one offline path: ``on_epoch`` after every epoch,
    and the note when --patience ended training early."""
    from edgekd.distill.strategies import _common

    scores = iter([0.5, 0.6, 0.6, 0.55])  # best at epoch 2; epochs 3 and 4 bring nothing
    scripted = (lambda student: next(scores), None)
    monkeypatch.setattr(_common, "best_epoch_score", lambda *args: scripted)
    seen = []
    config = replace(FAST, epochs=10, patience=2)
    job = DistillJob(teacher, tiny_student(), toy, config, "kd", on_epoch=seen.append)
    result = run_strategy("offline", job)
    assert len(seen) == 4 and all(s is result.student for s in seen)
    assert result.info["stopped_early"] == (
        "after epoch 4 of 10: no better validation score for 2 epochs; kept epoch 2"
    )


def test_offline_picks_embeddings_best_epoch_by_cosine(toy, teacher) -> None:
    from edgekd.teacher.outputs import TeacherOutputs
    from edgekd.train.loop import predict_logits

    outputs = TeacherOutputs(predict_logits(teacher, toy.train), predict_logits(teacher, toy.val))
    job = DistillJob(
        teacher, tiny_student(), toy, FAST, "embed", task="embedding", outputs=outputs
    )
    result = run_strategy("offline", job)
    assert result.info["teacher_signal"] == "teacher outputs computed once (cached)"
    assert result.info["best_epoch_by"] == "validation cosine similarity to the teacher"
    assert result.info["val_accuracy"] is None  # no accuracy for vectors


def test_cached_logits_refuse_augmented_views(toy) -> None:
    from edgekd.train.loop import cached_teacher

    signal = cached_teacher(np.zeros((toy.train.n, 3), np.float32))
    with pytest.raises(ValueError, match="cannot teach augmented views"):
        train_student(
            tiny_student(), toy.train, None, FAST, make_method("kd"), signal,
            augment=make_augmenter("image", "light"),
        )  # fmt: skip


def distilled_weights(toy, teacher, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    student = tiny_student(seed=seed)
    config = replace(FAST, seed=seed, epochs=2)
    job = DistillJob(teacher, student, toy, config, "kd", {}, StrategyOptions(augment="strong"))
    return [p.detach().clone() for p in run_strategy("offline", job).student.parameters()]


def test_same_seed_repeats_and_another_seed_changes_the_result(toy, teacher) -> None:
    a, b = distilled_weights(toy, teacher, 0), distilled_weights(toy, teacher, 0)
    c = distilled_weights(toy, teacher, 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_early_stopping_stops_and_a_resumed_run_stops_alike(toy, tmp_path) -> None:
    scores = iter([0.5, 0.6, 0.6, 0.55, 0.6, 0.9, 0.9, 0.9])  # best at epoch 2 (index 1)
    config = replace(FAST, epochs=10, patience=2)
    history = train_student(
        tiny_student(), toy.train, toy.val, config, val_score=lambda m: next(scores)
    )
    assert len(history.loss) == 4 and history.best_epoch == 1  # epochs 3 and 4 brought nothing
    checkpoint = tmp_path / "state.pt"
    again = iter([0.5, 0.6, 0.6, 0.55])
    train_student(
        tiny_student(), toy.train, toy.val, config, val_score=lambda m: next(again),
        checkpoint=checkpoint,
    )  # fmt: skip
    resumed = train_student(
        tiny_student(), toy.train, toy.val, config, checkpoint=checkpoint, resume=True,
        val_score=lambda m: pytest.fail("a run out of patience must not train again"),
    )  # fmt: skip
    assert len(resumed.loss) == 4 and resumed.best_epoch == 1
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(patience=-1)


@pytest.mark.parametrize(
    ("given", "kind", "task", "strategy", "params", "labels", "level"),
    [
        (None, "image", "classification", "offline", 10**5, False, "none"),
        (None, "sequence", "classification", "offline", 10**5, False, "strong"),
        (None, "sequence", "classification", "self", 10**5, False, "strong"),
        (None, "sequence", "classification", "offline", 10**5, True, "light"),
        (None, "vector", "classification", "offline", 10**5, False, "none"),
        (None, "tokens", "classification", "offline", 10**5, False, "none"),
        (None, "image", "embedding", "offline", 10**5, False, "none"),
        (None, "image", "classification", "online", 10**5, False, "none"),
        (None, "image", "classification", "offline", 10**8, False, "none"),
        ("strong", "sequence", "classification", "offline", 10**8, False, "strong"),
        ("light", "vector", "classification", "offline", 10**5, True, "light"),
        ("none", "image", "classification", "blackbox", 10**5, False, "none"),
    ],
)
def test_augmentation_defaults(given, kind, task, strategy, params, labels, level) -> None:
    chosen, why = choose_augment(given, kind, task, strategy, params, labels)
    assert chosen == level and why


def test_a_mixup_default_falls_back_to_light_for_methods_that_need_labels(monkeypatch) -> None:
    from edgekd.distill import views as consistent

    monkeypatch.setitem(consistent.DEFAULT_AUGMENT, "image", "strong")
    assert choose_augment(None, "image", "classification", "offline", 10**5, False)[0] == "strong"
    assert choose_augment(None, "image", "classification", "offline", 10**5, True)[0] == "light"


@pytest.mark.parametrize(
    ("given", "strategy", "labels", "needle"),
    [
        ("strong", "online", False, "needs a frozen PyTorch teacher"),
        ("strong", "offline", True, "use --augment light"),
        ("extreme", "offline", False, "--augment must be one of"),
    ],
)
def test_augmentation_refusals(given, strategy, labels, needle) -> None:
    with pytest.raises(BadInputError, match=needle):
        choose_augment(given, "image", "classification", strategy, 10**5, labels)


def test_median_stop_rule_by_hand() -> None:
    curves = [[0.5, 0.6, 0.7], [0.4, 0.5, 0.9], [0.6]]
    assert median_stop(curves, 2, 0.54, startup=2)  # median of 0.6 and 0.5 is 0.55
    assert not median_stop(curves, 2, 0.56, startup=2)
    assert not median_stop(curves, 3, 0.1, startup=3)  # only two trials reached epoch 3


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def strftime(self, fmt: str) -> str:
        return time.strftime(fmt)


class FakeSetup:
    """Stands in for the teacher, data and student: each 'epoch' sleeps and scores ``alpha``."""

    metric = "validation accuracy"
    epoch_s = 0.02
    sleep = staticmethod(time.sleep)

    def __init__(self, config) -> None:
        self.config = config

    defaults = {"temperature": 4.0, "alpha": 0.1, "lr": 3e-3, "augment": "strong", "method": "kd"}

    def space(self, methods):
        return {"alpha": ["uniform", 0.0, 0.5], "method": ["categorical", *methods]}

    def feasible(self, params) -> bool:
        return True

    def evaluate(self, params, on_epoch) -> float:
        for _ in range(self.config.epochs):
            self.sleep(self.epoch_s)
            on_epoch(params["alpha"])
        return params["alpha"]


@pytest.fixture
def fake_setup(monkeypatch):
    from edgekd import tune as tune_module

    fake = classmethod(lambda cls, config: FakeSetup(config))
    monkeypatch.setattr(tune_module.TrialRunner, "prepare", fake)


def test_tuning_respects_its_budget(fake_setup, tmp_path, monkeypatch) -> None:
    from edgekd import tune as tune_module
    from edgekd.config import DistillConfig

    clock = FakeClock()  # time passes only in the trials' epochs: no wall-clock flakiness
    monkeypatch.setattr(tune_module, "time", clock)
    monkeypatch.setattr(FakeSetup, "sleep", staticmethod(clock.sleep))
    budget, start = 0.6, clock.now
    result = tune(
        DistillConfig(epochs=8), TuneSettings(budget_s=budget, backend="random"), tmp_path / "t"
    )
    # Stopped at the first epoch boundary after the deadline, and no trial started after it.
    assert budget <= clock.now - start <= budget + FakeSetup.epoch_s + 1e-9
    assert all(t.seconds > 0 for t in result.trials)
    assert result.trials[-1].state in ("stopped", "pruned", "complete")
    assert any(t.state == "stopped" for t in result.trials)
    saved = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert saved["budget_s"] == budget and len(saved["trials"]) == len(result.trials)


def test_random_search_prunes_bad_trials_and_starts_from_the_defaults(fake_setup, tmp_path):
    from edgekd.config import DistillConfig

    settings = TuneSettings(budget_s=60, max_trials=12, backend="random", warmup_epochs=2)
    result = tune(DistillConfig(epochs=6), settings, tmp_path / "t")
    assert result.trials[0].params["alpha"] == 0.1  # the defaults come first
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert pruned and all(t.epochs_run == 3 for t in pruned)  # stopped right after the warm-up
    assert result.best.score == max(t.score for t in result.trials if t.state == "complete")
    assert "alpha = " in (tmp_path / "t" / "run.toml").read_text()


def test_random_searcher_is_seeded() -> None:
    space = {"lr": ["log", 1e-3, 1e-2], "augment": ["categorical", "none", "light"]}
    a = [RandomSearcher(space, seed=3).sample() for _ in range(2)]
    assert a[0] == a[1] and 1e-3 <= a[0]["lr"] <= 1e-2
    assert RandomSearcher(space, seed=4).sample() != a[0]
    no_light = lambda params: params["augment"] != "light"  # noqa: E731 (e.g. dkd, mixed views)
    picky = RandomSearcher(space, seed=3, feasible=no_light)
    assert all(picky.ask().params["augment"] == "none" for _ in range(20))


def test_tuning_settings_are_checked() -> None:
    with pytest.raises(BadInputError, match="--time-budget"):
        TuneSettings(budget_s=0)
    with pytest.raises(BadInputError, match="logit methods"):
        TuneSettings(methods=("fitnet",))


@pytest.fixture(scope="module")
def toy_npz(tmp_path_factory):
    """A small labelled image set for the CLI runs (three patch classes, like toydata)."""
    rng = np.random.default_rng(0)
    n = 150
    y = np.arange(n) % 3
    x = rng.normal(0.0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        rows, cols = PATCHES[c]
        x[i, 0, rows, cols] += 1.0
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    np.savez(path, x=x, y=y.astype(np.int64))
    return path


def test_tune_writes_settings_that_distill_reproduces(toy_npz, tmp_path) -> None:
    from edgekd.data import load_data
    from edgekd.students.checkpoint import load_model
    from edgekd.train.loop import accuracy, predict_logits

    out = tmp_path / "tune"
    base = tmp_path / "base.toml"
    base.write_text(
        f'data = "{toy_npz}"\nteacher_epochs = 4\nbatch_size = 16\nbench_processes = 1\n'
    )
    args = ["tune", "--config", str(base), "--epochs", "3", "--trials", "2", "--out", str(out)]
    result = runner.invoke(app, [*args, "--time-budget", "300", "--backend", "random"])
    assert result.exit_code == 0, result.output
    assert "reproduce: edgekd distill --config" in result.output
    tuned = json.loads((out / "tune.json").read_text())
    assert len(tuned["trials"]) == 2 and tuned["backend"] == "random"
    best = tuned["best"]
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        ["distill", "--config", str(out / "run.toml"), "--seeds", "2", "--out", str(run),
         "--bench-seconds", "0.02"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((run / "report.json").read_text())
    training = report["training"]
    for key in ("temperature", "alpha", "lr", "augment", "method"):
        assert training[key] == best["params"][key]
    # The first seed is the winning trial, retrained: the same validation accuracy.
    student = load_model(run / "student.safetensors")
    val = load_data(str(toy_npz), seed=0).val
    assert accuracy(predict_logits(student, val), val.y) == best["score"]
    seeds = training["seeds"]
    assert seeds["seeds"] == [0, 1] and len(seeds["values"]) == 2 and seeds["std"] >= 0.0


def fake_optuna():
    """Just enough of Optuna's ask-and-tell API (create_study, ask, suggest_*, report,
    should_prune, tell, enqueue_trial) to run the glue where Optuna is not installed."""
    import types

    class Trial:
        def __init__(self, study, params) -> None:
            self.study, self.fixed, self.params, self.values = study, params, {}, {}

        def suggest_float(self, name, low, high, log=False):
            self.params[name] = self.fixed.get(name, (low + high) / 2)
            return self.params[name]

        def suggest_categorical(self, name, choices):
            self.params[name] = self.fixed.get(name, choices[-1])
            return self.params[name]

        def report(self, value, step) -> None:
            self.values[step] = value

        def should_prune(self) -> bool:
            return False  # the rule is Optuna's own; this checks only the calls

    class Study:
        def __init__(self, direction, sampler, pruner) -> None:
            self.queue, self.told, self.pruner = [], [], pruner

        def enqueue_trial(self, params) -> None:
            self.queue.append(params)

        def ask(self):
            return Trial(self, self.queue.pop(0) if self.queue else {})

        def tell(self, trial, values=None, state=None) -> None:
            self.told.append((trial.params, values, state))

    module = types.SimpleNamespace(
        logging=types.SimpleNamespace(WARNING=30, set_verbosity=lambda level: None),
        samplers=types.SimpleNamespace(TPESampler=lambda seed: ("tpe", seed)),
        pruners=types.SimpleNamespace(
            MedianPruner=lambda n_startup_trials, n_warmup_steps: types.SimpleNamespace(
                n_warmup_steps=n_warmup_steps
            )
        ),
        trial=types.SimpleNamespace(TrialState=types.SimpleNamespace(PRUNED="P", FAIL="F")),
    )
    module.create_study = lambda direction, sampler, pruner: Study(direction, sampler, pruner)
    return module


def test_optuna_backend(fake_setup, tmp_path, monkeypatch) -> None:
    import sys

    from edgekd.config import DistillConfig

    try:
        import optuna  # noqa: F401
    except ImportError:
        monkeypatch.setitem(sys.modules, "optuna", fake_optuna())
    settings = TuneSettings(budget_s=60, max_trials=3, backend="optuna", warmup_epochs=1)
    result = tune(DistillConfig(epochs=3), settings, tmp_path / "t")
    assert result.backend == "optuna" and len(result.trials) == 3
    assert result.trials[0].params["alpha"] == 0.1  # the enqueued defaults
    assert result.best.state == "complete"


def test_asking_for_optuna_without_it_is_one_clear_error(fake_setup, tmp_path, monkeypatch):
    import sys

    from edgekd.config import DistillConfig

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(BadInputError, match="pip install 'edgekd\\[tune\\]'"):
        tune(DistillConfig(epochs=2), TuneSettings(budget_s=5, backend="optuna"), tmp_path / "t")


@pytest.mark.parametrize(
    ("kind", "augment", "epochs", "expected"),
    [
        ("sequence", None, None, (300, "strong")),  # the patient default
        ("image", None, None, (100, "none")),  # no augmentation, no long schedule
        ("image", "light", None, (300, "light")),
        ("sequence", None, 7, (7, "strong")),  # --epochs always wins
    ],
)
def test_epochs_follow_the_augmentation_unless_given(toy, kind, augment, epochs, expected):
    from types import SimpleNamespace

    from edgekd.config import DistillConfig
    from edgekd.distill.job import make_job

    teaching = SimpleNamespace(
        model=nn.Identity(), params=10**4, data=replace(toy, input_kind=kind), outputs=None
    )
    config = DistillConfig(epochs=epochs, augment=augment)
    job, _ = make_job(config, teaching, tiny_student("mlp"), "offline", "kd")
    assert (job.train.epochs, job.options.augment) == expected
