"""The run configuration: one name per knob from flag to field, and the settings builder that
reads options, ``--config`` files and an interrupted run's ``config.json`` into a config."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
from typer.testing import CliRunner

import edgekd
import edgekd.cli.distill as distill_cli
import edgekd.cli.tune as tune_cli
from edgekd.cli import app
from edgekd.config import DistillConfig, load_config_file, resume_config, task_defaults
from edgekd.distill import DEFAULT_TEMPERATURE
from edgekd.errors import BadInputError

runner = CliRunner()
FIELDS = {f.name: f for f in dataclasses.fields(DistillConfig)}
# `distill` options that say how to run, not what: they are not DistillConfig fields.
DISTILL_CLI_ONLY = {"config", "resume", "as_json", "nproc", "max_restarts", "dist_timeout"}
TUNE_CLI_ONLY = {"time_budget", "trials", "backend", "methods", "config", "tune_out", "as_json"}


def _options(command) -> dict[str, inspect.Parameter]:
    params = inspect.signature(inspect.unwrap(command)).parameters
    return {name: p for name, p in params.items() if name != "ctx"}


def test_every_field_is_a_distill_option_of_the_same_name_and_default() -> None:
    options = _options(distill_cli.distill)
    assert set(FIELDS) == set(options) - DISTILL_CLI_ONLY
    assert DISTILL_CLI_ONLY <= set(options)
    for name, field in FIELDS.items():
        default = options[name].default
        if field.default == () and default is None:  # a repeatable option: None = not given
            continue
        assert default == field.default, name


def test_tune_options_are_fields_or_its_own() -> None:
    options = _options(tune_cli.tune)
    assert set(options) - TUNE_CLI_ONLY <= set(FIELDS)
    assert all(options[n].default == FIELDS[n].default for n in set(options) - TUNE_CLI_ONLY)


def test_temperature_default_is_written_once() -> None:
    # the field is "unset" (None) and resolved per task (issue 18); the classifier's value is
    # still the one constant
    assert DistillConfig.__dataclass_fields__["temperature"].default is None
    assert task_defaults("classification")["temperature"] == DEFAULT_TEMPERATURE
    assert DistillConfig().temperature == DEFAULT_TEMPERATURE
    assert edgekd.DistillConfig is DistillConfig


@pytest.fixture()
def captured(monkeypatch):
    """The DistillConfig that `edgekd distill ARGS` would run, without running it."""
    seen: list[DistillConfig] = []

    def fake(settings, *args):
        seen.append(settings)

    monkeypatch.setattr(distill_cli, "_launch_workers_or_run", fake)
    return seen


def test_options_win_over_the_file_which_wins_over_defaults(tmp_path, captured) -> None:
    run = tmp_path / "run.toml"
    run.write_text('epochs = 3\nlr = 0.5\nstudent = "mlp"\n')
    args = ["distill", "--config", str(run), "--epochs", "7", "--pair", "a:b", "--pair", "c:d"]
    result = runner.invoke(app, [*args, "--student", "cnn1d", "--bench-seconds", "0.2"])
    assert result.exit_code == 0, result.output
    (config,) = captured
    assert (config.epochs, config.lr, config.student) == (7, 0.5, "cnn1d")
    assert config.pairs == ("a:b", "c:d") and config.bench_seconds == 0.2
    assert config.temperature == DEFAULT_TEMPERATURE and config.target == "mobile"


def test_a_file_cannot_set_trust(tmp_path, captured) -> None:
    run = tmp_path / "run.toml"
    run.write_text("trust_checkpoint = true\n")
    result = runner.invoke(app, ["distill", "--config", str(run)])
    assert result.exit_code == 2 and "may only be given on the command line" in result.stderr


def test_old_toml_keys_still_work_with_a_note(tmp_path, capsys) -> None:
    run = tmp_path / "run.toml"
    run.write_text('student_family = "mlp"\nmethod_weight = 2.0\nbench_min_time_s = 0.1\n')
    values = load_config_file(run, DistillConfig)
    assert values == {"student": "mlp", "weight": 2.0, "bench_seconds": 0.1}
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 3 and "'student_family' is deprecated, use 'student'" in notes[0]


def test_old_keys_are_checked_under_their_new_name(tmp_path) -> None:
    run = tmp_path / "run.toml"
    run.write_text("bench_min_time_s = 0\n")
    with pytest.raises(BadInputError, match="'bench_seconds': must be > 0"):
        load_config_file(run, DistillConfig)


def test_an_interrupted_run_with_old_keys_resumes(tmp_path, capsys) -> None:
    work = tmp_path / "out.partial"
    work.mkdir()
    saved = {**dataclasses.asdict(DistillConfig()), "out": str(tmp_path / "out")}
    saved["student_family"] = saved.pop("student")
    saved["method_weight"] = 0.5
    del saved["weight"]
    (work / "config.json").write_text(json.dumps(saved))
    config = resume_config(tmp_path / "out")
    assert config.weight == 0.5 and config.out == str(tmp_path / "out")
    assert "'method_weight' is deprecated" in capsys.readouterr().err


def test_resume_refuses_a_field_option_by_its_flag(tmp_path) -> None:
    result = runner.invoke(app, ["distill", "--resume", str(tmp_path), "--pair", "a:b"])
    assert result.exit_code == 2 and "drop --pair" in result.stderr


def test_a_file_may_set_the_repeatable_pairs(tmp_path) -> None:
    run = tmp_path / "run.toml"
    run.write_text('pairs = ["a:b", "c:d"]\n')
    assert load_config_file(run, DistillConfig) == {"pairs": ("a:b", "c:d")}


def test_targets_and_run_files_share_one_validator(tmp_path) -> None:
    from edgekd.errors import TargetError
    from edgekd.targets import TARGETS_DIR, load_target

    path = tmp_path / "mine.toml"
    path.write_text(
        (TARGETS_DIR / "mobile.toml").read_text().replace("threads = 4", "threads = 4.5")
    )
    with pytest.raises(TargetError) as err:
        load_target(path)
    line = next(
        n for n, t in enumerate(path.read_text().splitlines(), 1) if t.startswith("threads")
    )
    assert str(err.value) == (
        f"{path}: 1 problem: line {line} 'threads': expected an integer, got a number 4.5"
    )


# --- options whose default depends on the task (issue 18) ---------------------------------------


def test_unset_options_take_their_tasks_default_and_explicit_values_win(captured) -> None:
    runner.invoke(app, ["distill", "--task", "causal-lm"])
    runner.invoke(app, ["distill", "--task", "causal-lm", "--temperature", "4", "--lr", "0.01"])
    runner.invoke(app, ["distill", "--batch-size", "16"])
    lm, explicit, classifier = captured
    assert (lm.lr, lm.batch_size, lm.temperature) == (3e-3, 16, 1.0)
    assert set(lm.setting_sources().values()) == {"default for --task causal-lm"}
    # an explicit value equal to the classifier's default is no longer replaced
    assert (explicit.lr, explicit.batch_size, explicit.temperature) == (0.01, 16, 4.0)
    assert explicit.setting_sources() == {
        "lr": "given", "batch_size": "default for --task causal-lm", "temperature": "given"}
    assert (classifier.lr, classifier.batch_size, classifier.temperature) == (0.01, 16, 4.0)


def test_lm_settings_keep_explicit_values() -> None:
    from edgekd.lm.pipeline import LM_DEFAULTS, lm_settings

    given = DistillConfig(task="causal-lm", temperature=4.0, batch_size=64)
    assert lm_settings(given, LM_DEFAULTS) == {"lr": 3e-3, "batch_size": 64, "temperature": 4.0}
    # another path's own defaults (the black box's SFT) replace only what was left unset
    assert lm_settings(given, {"lr": 1e-3, "batch_size": 32}) == {"lr": 1e-3, "batch_size": 64}


def test_a_resumed_run_resolves_unset_options_again(tmp_path) -> None:
    config = DistillConfig(task="causal-lm", lr=0.02)
    work = tmp_path / "out.partial"
    work.mkdir()
    (work / "config.json").write_text(json.dumps({**config.as_given(), "out": "x"}))
    again = resume_config(tmp_path / "out")
    assert (again.lr, again.batch_size, again.temperature) == (0.02, 16, 1.0)
    assert again.setting_sources() == config.setting_sources()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--gkd-beta", "1.0"], "gkd_beta must be in (0, 1)"),
        (["--gkd-beta", "0"], "gkd_beta must be in (0, 1)"),
        (["--on-policy", "1.5"], "on_policy must be in [0, 1]"),
        (["--on-policy", "-0.1"], "on_policy must be in [0, 1]"),
    ],
)
def test_gkd_knobs_out_of_range_are_refused_in_one_line(args, message) -> None:
    result = runner.invoke(app, ["distill", "--task", "causal-lm", "--method", "gkd", *args])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_gkd_knobs_in_a_file(tmp_path) -> None:
    run = tmp_path / "run.toml"
    run.write_text("gkd_beta = 0.1\non_policy = 1.5\n")
    with pytest.raises(BadInputError, match="line 2 'on_policy': must be in"):
        load_config_file(run, DistillConfig)
