"""``edgekd distill --task causal-lm --strategy blackbox``: learn from what a teacher writes.

The stages, each a short function over this package's modules:

    _inputs      target, prompt records (train, held out), the text teacher, the form
    _generate    the teacher answers every prompt (``stage.py``: recorded in
                 ``OUT/teacher_data.jsonl``, resumable, cached, within --max-teacher-tokens)
    _examples    filters (``filters.py``), then training pairs in the chosen form (``forms.py``)
    _tokenizer   the teacher's tokenizer (--teacher-generate, --tokenizer), else a byte-level
                 BPE trained here on the prompts and kept answers (saved as OUT/tokenizer.json)
    _train       the student sized to the target (``edgekd.lm.sizing``), fine-tuned on the
                 pairs with the loss on the answer tokens only (``edgekd.lm.train``)
    evaluation   held-out accuracy, agreement with the teacher, perplexity of its answers
                 (``evaluate.py``), then the white-box path's export, quantization and bench

The run folder is ``OUT.partial/`` until the end (``edgekd.rundir``): Ctrl-C keeps it and the
generation log in it, and ``--resume OUT`` asks the teacher only what it has not answered yet.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.cache import cache_dir
from edgekd.config import DistillConfig
from edgekd.errors import BadInputError
from edgekd.fileio import write_json_atomic, write_text_atomic
from edgekd.lm.blackbox.filters import FilterSpec, filter_texts
from edgekd.lm.blackbox.forms import (
    Example,
    FormSpec,
    build_requests,
    evolve_requests,
    evolved_records,
    replies_texts,
    to_examples,
)
from edgekd.lm.blackbox.records import GenerationSettings, PromptRecord, read_prompts
from edgekd.lm.blackbox.stage import (
    AnswerCache,
    GenerationBudget,
    run_generation,
    whitespace_tokens,
)
from edgekd.lm.blackbox.teachers import CommandTextTeacher, TextTeacher
from edgekd.progress import status
from edgekd.rundir import CONFIG_FILE, run_dir
from edgekd.targets import TargetProfile, load_target

LOG_FILE = "teacher_data.jsonl"
DEFAULT_CONTEXT = 128
DEFAULT_STEPS = 600
TOKENIZER_VOCAB = 1024
# Values that replace a classifier default left unchanged (as edgekd.lm.pipeline.LM_DEFAULTS).
SFT_DEFAULTS = {"lr": 3e-3, "batch_size": 32}
TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022: ~20 training tokens per parameter


@dataclass(frozen=True)
class BlackBoxRun:
    config: DistillConfig
    target: TargetProfile
    form: FormSpec
    settings: GenerationSettings
    train: tuple[PromptRecord, ...]
    test: tuple[PromptRecord, ...]
    teacher: TextTeacher
    tokenizer: Any  # edgekd.lm.teacher.WrappedTokenizer, or None: trained on the run's text
    context: int


def distill_blackbox_lm(config: DistillConfig, resume: bool = False) -> dict[str, Any]:
    """Run the black-box causal-LM pipeline; return the report (also written to ``OUT``)."""
    laps: dict[str, float] = {}
    clock = time.perf_counter()
    run = _inputs(config)
    out = Path(config.out or f"runs/{run.target.name}-lm-blackbox-{time.strftime('%Y%m%d-%H%M%S')}")
    with run_dir(out, overwrite=config.overwrite, resume=resume) as work:
        if not resume:
            write_json_atomic(work / CONFIG_FILE, {**dataclasses.asdict(config), "out": str(out)})
        run, replies, generation = _generate(run, work)
        laps["generation"], clock = time.perf_counter() - clock, time.perf_counter()
        examples, counts = _examples(run, replies)
        tokenizer = _tokenizer(run, examples, work)
        student, sizing, history, encoded = _train(run, examples, tokenizer)
        laps["distill"], clock = time.perf_counter() - clock, time.perf_counter()
        held_out = _evaluate(run, student, tokenizer, replies)
        exported, selection, rows = _deploy(run, student, tokenizer, replies, work)
        laps["export+quantize+bench"] = time.perf_counter() - clock
        report = _report(
            run, out, generation, counts, encoded, sizing, history, held_out, exported,
            selection, rows, laps,
        )
        write_json_atomic(work / "report.json", report)
        write_text_atomic(work / "report.md", blackbox_markdown(report))
    return report


# --- inputs -------------------------------------------------------------------------------------


def _inputs(config: DistillConfig) -> BlackBoxRun:
    target = load_target(config.target)
    if config.data is None:
        raise BadInputError(
            "--strategy blackbox with --task causal-lm needs --data prompts.jsonl "
            '({"prompt": ..., "answer": ...} per line)'
        )
    form = FormSpec(config.blackbox_form, config.icl_shots, config.seed)
    settings = GenerationSettings(
        temperature=config.teacher_temperature, top_p=config.teacher_top_p,
        max_new_tokens=config.max_new_tokens, samples=config.samples, seed=config.seed,
    )
    train = read_prompts(config.data)
    if config.test_data:
        test = read_prompts(config.test_data)
    else:
        if len(train) < 10:
            raise BadInputError(f"{config.data}: {len(train)} prompts, too few to hold out a "
                                "tenth; give more or --test-data")  # fmt: skip
        cut = len(train) - max(1, len(train) // 10)
        train, test = train[:cut], train[cut:]
    teacher, tokenizer = _teacher(config)
    context = config.context or target.lm.context_tokens or DEFAULT_CONTEXT
    return BlackBoxRun(
        config, target, form, settings, tuple(train), tuple(test), teacher, tokenizer, context
    )


def _teacher(config: DistillConfig) -> tuple[TextTeacher, Any]:
    """The text teacher and, when it has one, the tokenizer the student shares with it."""
    from edgekd.lm.teacher import load_tokenizer

    given = [o for o in ("teacher_cmd", "teacher_generate") if getattr(config, o)]
    if len(given) != 1:
        raise BadInputError(
            "--strategy blackbox with --task causal-lm needs exactly one teacher: --teacher-cmd "
            "CMD (run as CMD REQUESTS.jsonl ANSWERS.jsonl) or --teacher-generate HF_FOLDER"
        )
    tokenizer = load_tokenizer(config.tokenizer) if config.tokenizer else None
    if config.teacher_cmd:
        return CommandTextTeacher(config.teacher_cmd, config.teacher_timeout), tokenizer
    from edgekd.lm.blackbox.generate import GeneratingTeacher
    from edgekd.lm.teacher import load_hf_teacher

    folder = config.teacher_generate
    teacher = load_hf_teacher(folder, config.trust_checkpoint)
    model = getattr(teacher.module, "model", teacher.module)
    return GeneratingTeacher(model, teacher.tokenizer.inner, folder), (
        tokenizer or teacher.tokenizer
    )


# --- generation and examples -------------------------------------------------------------------


def _generate(run: BlackBoxRun, work: Path):
    """The teacher's answers to the training and held-out prompts (one recorded log), after the
    harder prompts it wrote with ``--evolve``; the run with those prompts among its training
    records."""
    budget = GenerationBudget(
        max_tokens=run.config.max_teacher_tokens, retries=run.config.teacher_retries
    )
    cache = AnswerCache(run.teacher.identity, cache_dir() / "lm-teacher")
    evolution = None
    if run.config.evolve:
        asked = evolve_requests(run.train, run.settings, run.config.evolve, run.config.seed)
        replies, summary = run_generation(
            asked, run.teacher, work / LOG_FILE, budget, _counter(run), cache
        )
        new, dropped = evolved_records(run.train, replies)
        evolution = {"asked": len(asked), "kept": len(new), "dropped": dict(dropped),
                     "tokens": summary.tokens, "failed": summary.failed}  # fmt: skip
        status(f"evolve: {len(new)} harder prompts written by the teacher of {len(asked)} asked")
        run = dataclasses.replace(run, train=run.train + tuple(new))
    pool = run.train
    requests = build_requests(run.form, run.train, run.settings, pool)
    held_out = dataclasses.replace(run.settings, samples=1, temperature=0.0)
    requests += [
        dataclasses.replace(r, id=f"test:{r.id}")
        for r in build_requests(run.form, run.test, held_out, pool)
    ]
    replies, summary = run_generation(
        requests, run.teacher, work / LOG_FILE, budget, _counter(run), cache
    )
    status(
        f"teacher: {summary.from_teacher} answered now, {summary.from_log} from the log, "
        f"{summary.from_cache} from the cache, {summary.failed} failed, "
        f"{summary.over_budget} over budget ({summary.tokens:,} tokens)"
    )
    summary.evolve = evolution
    return run, replies, summary


def _counter(run: BlackBoxRun):
    """Tokens as the teacher's tokenizer counts them; words when the run has none yet."""
    if run.tokenizer is None:
        return whitespace_tokens
    return lambda text: len(run.tokenizer.encode(text))


def _examples(run: BlackBoxRun, replies) -> tuple[list[Example], dict[str, Any]]:
    train_replies = {k: v for k, v in replies.items() if not k.startswith("test:")}
    spec = FilterSpec(answer_check=run.config.answer_check)
    kept, dropped = filter_texts(
        run.train, train_replies, run.settings.max_new_tokens, spec, _counter(run)
    )
    examples, form_dropped = to_examples(run.form, run.train, kept, run.train)
    if not examples:
        raise BadInputError(
            "no training pairs left after the teacher and the filters "
            f"(dropped: {dict(dropped + form_dropped)}); see {LOG_FILE}"
        )
    counts = {
        "filters": dict(dropped),
        "form": dict(form_dropped),
        "texts_kept": sum(len(v) for v in kept.values()),
        "examples": len(examples),
    }
    return examples, counts


def _tokenizer(run: BlackBoxRun, examples: list[Example], work: Path):
    if run.tokenizer is not None:
        return run.tokenizer
    from edgekd.lm.default import train_tokenizer
    from edgekd.lm.teacher import WrappedTokenizer

    texts = [f"{e.prompt} {e.target}" for e in examples]
    raw = train_tokenizer(texts, vocab=TOKENIZER_VOCAB)
    raw.save(str(work / "tokenizer.json"))
    return WrappedTokenizer(raw, "the run's tokenizer")


# --- training and evaluation --------------------------------------------------------------------


def _train(run: BlackBoxRun, examples: list[Example], tokenizer):
    import torch

    from edgekd.lm.blackbox.sft import encode_examples
    from edgekd.lm.pipeline import lm_settings
    from edgekd.lm.sizing import size_lm_to_target
    from edgekd.lm.student import LMStudent
    from edgekd.lm.train import LMTrainConfig, train_lm

    config = run.config
    row = run.context + 1
    encoded = encode_examples(examples, tokenizer.encode, tokenizer.eos_id, tokenizer.eos_id, row)
    if len(encoded) < 2:
        raise BadInputError(f"{len(encoded)} training pairs fit --context {run.context}: too few")
    settings = lm_settings(config, SFT_DEFAULTS)
    steps = config.steps or DEFAULT_STEPS
    learned = int((encoded.labels != -100).sum())  # answer tokens, the ones the loss counts
    tokens_seen = learned * steps * settings["batch_size"] // len(encoded)
    sizing = size_lm_to_target(
        run.target, tokenizer.vocab_size, run.context,
        max_params=max(1, tokens_seen // TOKENS_PER_PARAM),
    )  # fmt: skip
    status(sizing.reason)
    cut = len(encoded) - max(1, len(encoded) // 10)
    ids, labels = encoded.input_ids, encoded.labels
    torch.manual_seed(config.seed)
    student = LMStudent(dataclasses.replace(sizing.config, context=max(sizing.config.context, row)))
    train_config = LMTrainConfig(
        steps=steps, lr=settings["lr"], batch_size=settings["batch_size"], alpha=1.0,
        seed=config.seed, device=config.device, precision=config.precision,
        time_budget=config.time_budget,
    )  # fmt: skip
    history = train_lm(
        student, ids[:cut], ids[cut:], train_config, description="fine-tune",
        labels=(labels[:cut], labels[cut:]),
    )
    return student.cpu().eval(), sizing, history, encoded


def _evaluate(run: BlackBoxRun, student, tokenizer, replies):
    from edgekd.lm.blackbox.evaluate import evaluate_held_out
    from edgekd.lm.blackbox.sft import torch_callables

    generate, score = torch_callables(
        student, tokenizer.encode, tokenizer.decode, tokenizer.eos_id, run.context + 1
    )
    teacher_texts = {
        k.removeprefix("test:"): v for k, v in replies_texts(replies).items()
        if k.startswith("test:")
    }
    result = evaluate_held_out(
        run.form, run.test, teacher_texts, generate, score, pool=run.train,
        max_new_tokens=min(run.settings.max_new_tokens, run.context // 2),
    )
    status(
        f"held out: accuracy {_pct(result.accuracy)} (teacher {_pct(result.teacher_accuracy)}), "
        f"agreement with the teacher {_pct(result.agreement)}"
    )
    return result


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _deploy(run: BlackBoxRun, student, tokenizer, replies, work: Path):
    """Export, quantization and bench as on the white-box path, on the held-out prompts and the
    teacher's answers to them (the training pairs when the teacher answered too few)."""
    from edgekd.lm.blackbox.forms import eval_prompt
    from edgekd.lm.data import pack_blocks
    from edgekd.lm.pipeline import bench_students, export_and_quantize

    answers = replies_texts(replies)
    texts = [
        f"{eval_prompt(run.form, r, run.train)} {answers[f'test:{r.id}'][0]}"
        for r in run.test if answers.get(f"test:{r.id}")
    ]
    token_lists = [tokenizer.encode(t) for t in texts]
    total = sum(len(t) + 1 for t in token_lists)
    context = max(4, min(run.context, 64, total // 4 - 1))
    blocks = pack_blocks(token_lists, context, tokenizer.eos_id, "held-out answers").blocks
    prompts = [list(map(int, b[: min(16, context)])) for b in blocks[:4]]
    exported, selection = export_and_quantize(
        student, work, prompts, blocks[:16], run.target.lm.perplexity_increase
    )
    rows = bench_students(selection, blocks[:32], prompts, run.context)
    return exported, selection, rows


# --- the report ---------------------------------------------------------------------------------


def _report(run, out, generation, counts, encoded, sizing, history, held_out, exported,
            selection, rows, laps) -> dict[str, Any]:  # fmt: skip
    from edgekd.lm.bench import budget_lines
    from edgekd.lm.pipeline import with_deployment

    student = next(r for r in rows if r.name == "student")
    lines = budget_lines(student, run.target.lm, None)  # no teacher perplexity: a black box
    report = {
        "task": "causal-lm",
        "strategy": "blackbox",
        "out_dir": str(out),
        "target": run.target.name,
        "target_lm": dataclasses.asdict(run.target.lm),
        "teacher": {"source": str(run.teacher), "identity": run.teacher.identity},
        "form": {"name": run.form.name, "icl_shots": run.form.icl_shots},
        "generation": {"settings": run.settings.as_dict(), "log": LOG_FILE,
                       **generation.as_dict()},
        "filtering": counts,
        "data": {"train_prompts": len(run.train), "test_prompts": len(run.test),
                 "pairs": len(encoded), "dropped_too_long": encoded.dropped_too_long},
        "held_out": held_out.as_dict(),
    }  # fmt: skip
    return with_deployment(report, sizing, history, exported, selection, rows, lines, laps)


def blackbox_markdown(report: dict[str, Any]) -> str:
    """report.md: what the teacher was asked and answered, what was kept, how the student did,
    and teacher and student answers to the same held-out prompts side by side."""
    from edgekd.lm.blackbox.evaluate import HeldOutResult, side_by_side
    from edgekd.report.lm import num

    g, f, h = report["generation"], report["filtering"], report["held_out"]
    out = [
        f"# edgekd black-box causal-LM run: {report['target']} ({report['verdict']})", "",
        f"Teacher: {report['teacher']['source']}. Form: {report['form']['name']}. "
        f"Student: {report['student']['params']:,} params ({report['student']['sizing']}).", "",
        "## Teacher data", "",
        f"{g['requests']} requests: {g['from_teacher']} answered now, {g['from_log']} from the "
        f"log, {g['from_cache']} from the cache, {g['failed']} failed after retries, "
        f"{g['over_budget']} over the token budget; {g['tokens']:,} tokens in {g['calls']} calls "
        f"({g['retried']} retried). Every request and answer: `{g['log']}`.", "",
        *_evolve_line(g.get("evolve")),
        "| filter | dropped |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in {**f["filters"], **f["form"]}.items()], "",
        f"{f['texts_kept']} texts kept, {f['examples']} training pairs.", "",
        "## Held-out prompts", "",
        f"Accuracy {_pct(h['accuracy'])} (teacher {_pct(h['teacher_accuracy'])}), agreement with "
        f"the teacher {_pct(h['agreement'])}, perplexity of the teacher's answers "
        f"{num(h['teacher_answer_perplexity'])}.", "",
    ]  # fmt: skip
    rows = tuple(tuple(s.values()) for s in h["samples"])
    out.append(side_by_side(HeldOutResult(h["prompts"], None, None, None, None, rows)))
    out += ["", "## Student variants", "", "| model | perplexity | decode tokens/s | ttft ms |",
            "|---|---|---|---|"]  # fmt: skip
    out += [f"| {m['name']} | {num(m['perplexity'])} | {num(m['decode_tokens_per_s'])} | "
            f"{num(m['ttft_ms'])} |" for m in report["models"]]  # fmt: skip
    return "\n".join(out) + "\n"


def _evolve_line(evolve: dict | None) -> list[str]:
    if not evolve:
        return []
    return [f"--evolve: the teacher wrote {evolve['kept']} harder prompts of {evolve['asked']} "
            f"asked (left out: {evolve['dropped'] or 'none'}); they were answered and learnt "
            "like the others.", ""]  # fmt: skip


def print_blackbox_summary(report: dict[str, Any]) -> None:
    h = report["held_out"]
    print(
        f"student ({report['quantization']['chosen']}, {report['student']['params']:,} params): "
        f"held-out accuracy {_pct(h['accuracy'])} vs teacher {_pct(h['teacher_accuracy'])}, "
        f"agreement {_pct(h['agreement'])}"
    )
    print(f"report: {report['out_dir']}/report.md")
    print(f"budget: {report['verdict']}")

