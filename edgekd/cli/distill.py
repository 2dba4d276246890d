"""`edgekd distill`: the whole pipeline, teacher to budget-verified quantized student.

One option per ``DistillConfig`` field, of the same name, defaulting to the field's default; the
rest (``--config``, ``--resume``, ``--json``, ``--nproc``, ``--max-restarts``, ``--dist-timeout``)
say how to run, not what to run.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from edgekd.cli._app import verb
from edgekd.cli.options import (
    Config,
    Data,
    Epochs,
    Json,
    Out,
    Overwrite,
    Seed,
    Student,
    Target,
    Teacher,
    TeacherWeights,
    field_defaults,
    settings_from_cli,
)
from edgekd.config import DistillConfig

if TYPE_CHECKING:
    from edgekd.results import Report

D = field_defaults(DistillConfig)  # the option defaults: written once, on the fields


TestData = Annotated[
    str | None, typer.Option(help="Held-out test data, same format (default: split off).")
]
ValData = Annotated[str | None, typer.Option(help="Held-out validation data, same format.")]
LabelColumn = Annotated[
    str | None, typer.Option(help="CSV label column (default 'label'; .npz: 'y').")
]
ImageSize = Annotated[
    int | None,
    typer.Option(
        help="Image folders: resize each image's short side to N and crop the centre N x N "
        "(default: images must all have one size).",
    ),
]
DataWorkers = Annotated[
    int | None,
    typer.Option(
        help="Worker processes decoding a large image folder's batches while training runs "
        "(folders over 64 MiB decoded are streamed; default: one per spare core, at most 4; "
        "0: decode in the training process).",
    ),
]
Normalize = Annotated[
    str,
    typer.Option(
        help="Input normalisation run by the student, first ops of its ONNX (a device feeds raw "
        "inputs): none, auto (per-channel mean/std of 1,000 training samples), or MEAN:STD, "
        "each one number or one per channel (0.485,0.456,0.406:0.229,0.224,0.225).",
    ),
]
TeacherOutput = Annotated[
    str | None,
    typer.Option(help="Which output to distil when the teacher returns a tuple or dict."),
]
TrustCheckpoint = Annotated[
    bool,
    typer.Option(
        help="Allow loading files that can run code (pickles, TorchScript, .pt2). Only for "
        "files whose source you trust."
    ),
]
Task = Annotated[
    str,
    typer.Option(
        help="'classification' (logits), 'embedding' (vectors) or 'causal-lm' (a decoder-only "
        "language model: see README 'Language models (white-box)')."
    ),
]
Context = Annotated[
    int | None,
    typer.Option(
        help="causal-lm: tokens per training block (default: the target's context, else 128; at "
        "most the teacher's)."
    ),
]
TopK = Annotated[
    int, typer.Option(help="causal-lm: teacher log-probs cached per position (top-k + the rest).")
]
Tokenizer = Annotated[
    str | None,
    typer.Option(help="causal-lm: the tokenizer (folder or tokenizer.json) of a factory teacher."),
]
PruneVocab = Annotated[
    bool,
    typer.Option(
        help="causal-lm: the student keeps only the tokens the text uses; the exported model "
        "still reads and returns the tokenizer's ids."
    ),
]
Steps = Annotated[
    int | None, typer.Option(help="causal-lm: optimizer steps (default 600).")
]
GkdBeta = Annotated[
    float | None,
    typer.Option(
        help="--method gkd: beta of the generalized JSD, in (0, 1); near 0 acts like forward KL, "
        "near 1 like reverse KL (default 0.5)."
    ),
]
OnPolicy = Annotated[
    float | None,
    typer.Option(
        help="--method gkd: share of steps (0..1) on sequences the student samples itself, "
        "scored by the teacher (default 0.5)."
    ),
]
Method = Annotated[
    str | None, typer.Option(help="Distillation method (default kd; embed for --task embedding).")
]
Strategy = Annotated[
    str | None,
    typer.Option(
        help="offline (default), online, self, assistant or blackbox (see `edgekd methods`)."
    ),
]
Pairs = Annotated[
    list[str] | None,
    typer.Option(
        "--pair",
        help="STUDENT_LAYER:TEACHER_LAYER for feature methods; repeatable "
        "(default features:features).",
    ),
]
Temperature = Annotated[
    float | None,
    typer.Option(help="Softmax temperature T for soft targets (default 4; 1 for causal-lm)."),
]
TemperatureEnd = Annotated[
    float | None, typer.Option(help="Anneal T linearly to this value by the last epoch.")
]
Alpha = Annotated[
    float | None,
    typer.Option(
        help="Weight of the hard-label CE; 1 - alpha weights the method (default: its own)."
    ),
]
Weight = Annotated[
    float | None, typer.Option(help="Multiplier of the method's own loss (default: its own).")
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        help="Training batch size (with --nproc: the global batch, split over workers; default "
        "64; 16 blocks for causal-lm)."
    ),
]
Lr = Annotated[
    float | None,
    typer.Option(help="Peak learning rate (one-cycle schedule; default 0.01, causal-lm 0.003)."),
]
FinetuneEpochs = Annotated[
    int, typer.Option(help="Hard-label fine-tune epochs after the strategy.")
]
Generations = Annotated[int, typer.Option(help="Born-again generations (--strategy self).")]
Peer = Annotated[
    str, typer.Option(help="--strategy online: learn with a copy of the teacher, or a 2nd student.")
]
TeacherOnnx = Annotated[
    str | None, typer.Option(help="Black-box teacher: an ONNX file run with ONNX Runtime.")
]
TeacherCmd = Annotated[
    str | None,
    typer.Option(help="Black-box teacher: a command run as `CMD IN.npz OUT.npz` per batch."),
]
BlackboxOutput = Annotated[
    str, typer.Option(help="What the black-box teacher gives: probs, topk:K or labels.")
]
BlackboxForm = Annotated[
    str,
    typer.Option(
        help="causal-lm black box: what the teacher writes: answers, rationales (reasoning then "
        "'Answer: ...', trained as two tasks) or icl (prompts with --icl-shots demonstrations)."
    ),
]
Samples = Annotated[int, typer.Option(help="causal-lm black box: teacher texts per prompt.")]
IclShots = Annotated[
    int, typer.Option(help="causal-lm black box, --blackbox-form icl: demonstrations per prompt.")
]
TeacherTemperature = Annotated[
    float, typer.Option(help="causal-lm black box: the teacher's sampling temperature (0: greedy).")
]
TeacherTopP = Annotated[float, typer.Option(help="causal-lm black box: the teacher's top-p.")]
MaxNewTokens = Annotated[
    int, typer.Option(help="causal-lm black box: most tokens the teacher writes per text.")
]
MaxTeacherTokens = Annotated[
    int | None,
    typer.Option(
        help="causal-lm black box: tokens the teacher may read and write in all; requests that "
        "could exceed it are not sent (counted in the report)."
    ),
]
TeacherRetries = Annotated[
    int, typer.Option(help="causal-lm black box: extra attempts for a failed request.")
]
TeacherTimeout = Annotated[
    float, typer.Option(help="causal-lm black box: seconds each --teacher-cmd call may take.")
]
TeacherGenerate = Annotated[
    str | None,
    typer.Option(
        help="causal-lm black box: a local Hugging Face folder used only through generation."
    ),
]
AnswerCheck = Annotated[
    str | None,
    typer.Option(
        help="causal-lm black box: a command run as `CMD IN.jsonl OUT.jsonl` that keeps an answer "
        'only if it writes {"id": ..., "ok": true} for it.'
    ),
]
Evolve = Annotated[
    int,
    typer.Option(
        help="causal-lm black box: first have the teacher rewrite N training prompts into harder "
        "ones (Evol-Instruct), then answer and learn them too."
    ),
]
InitFromTeacher = Annotated[
    bool,
    typer.Option(
        help="Initialise the student from the teacher's weights (every other layer, leading "
        "channels; same family only; causal-lm: a Llama-style teacher's width, every k-th "
        "layer)."
    ),
]
TeacherEpochs = Annotated[
    int | None,
    typer.Option(
        help="Epochs for training the default teacher (cached afterwards). Default: a budget "
        "of optimizer steps per input kind that grows slowly with the data, the last epoch cut "
        "at the budget."
    ),
]
BenchSeconds = Annotated[
    float, typer.Option(help="Minimum timed seconds per model in the benchmark.")
]
BenchProcesses = Annotated[
    int, typer.Option(min=1, help="Fresh processes per model in the benchmark (pyperf-style).")
]
Augment = Annotated[
    str | None,
    typer.Option(
        help="Transfer-set augmentation, teacher and student on the same view: none, light "
        "or strong (mixup; for long runs). Default: strong for sequences, else none."
    ),
]
Patience = Annotated[
    int, typer.Option(help="Stop after N epochs without a better validation score (0: off).")
]
TimeBudget = Annotated[
    float | None,
    typer.Option(
        help="Seconds of training: stop at the first epoch end after them and keep the best "
        "epoch so far (each training stage of a strategy gets them)."
    ),
]
Seeds = Annotated[
    int, typer.Option(help="Train N seeds; report mean +- std (artifacts of the first).")
]
TrainThreads = Annotated[
    int | None,
    typer.Option(
        help="torch threads for training (default: the faster of 1 and the usable cores, "
        "timed over a few steps; $EDGEKD_TRAIN_THREADS for library use)."
    ),
]
CheckpointEvery = Annotated[
    float,
    typer.Option(
        help="Seconds between training checkpoints (also written at Ctrl-C and at the end); "
        "a kill -9 loses at most this much training."
    ),
]
Device = Annotated[
    str,
    typer.Option(
        help="Where to train: auto (CUDA when available, else the CPU), cpu, cuda or cuda:N "
        "(with --nproc: one GPU per worker)."
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        help="Training arithmetic: auto (fp32 on the CPU; bf16 autocast on CUDA where the GPU "
        "supports it, else fp16 with a gradient scaler), fp32, bf16 or fp16 (CUDA only)."
    ),
]
Resume = Annotated[
    str | None,
    typer.Option(help="Continue the interrupted run in this folder (OUT or OUT.partial)."),
]
Nproc = Annotated[
    int,
    typer.Option(
        help="Train with N local worker processes (torchrun + DistributedDataParallel; gloo "
        "on CPU). Same result as one process with the same --batch-size (global batch)."
    ),
]
MaxRestarts = Annotated[
    int,
    typer.Option(
        help="With --nproc: restart all workers up to N times after a failure; they resume "
        "from the last complete checkpoint."
    ),
]
DistTimeout = Annotated[
    float,
    typer.Option(
        help="Distributed runs: seconds a worker waits for the others in a collective before "
        "the run fails (exit 7)."
    ),
]


@verb
def distill(
    ctx: typer.Context,
    target: Target = D["target"],
    data: Data = D["data"],
    test_data: TestData = D["test_data"],
    val_data: ValData = D["val_data"],
    label_column: LabelColumn = D["label_column"],
    image_size: ImageSize = D["image_size"],
    data_workers: DataWorkers = D["data_workers"],
    normalize: Normalize = D["normalize"],
    teacher: Teacher = D["teacher"],
    teacher_weights: TeacherWeights = D["teacher_weights"],
    teacher_output: TeacherOutput = D["teacher_output"],
    trust_checkpoint: TrustCheckpoint = D["trust_checkpoint"],
    task: Task = D["task"],
    method: Method = D["method"],
    strategy: Strategy = D["strategy"],
    pairs: Pairs = None,  # the field's () is its default; Typer gives None for "not given"
    temperature: Temperature = D["temperature"],
    temperature_end: TemperatureEnd = D["temperature_end"],
    alpha: Alpha = D["alpha"],
    weight: Weight = D["weight"],
    epochs: Epochs = D["epochs"],
    lr: Lr = D["lr"],
    batch_size: BatchSize = D["batch_size"],
    finetune_epochs: FinetuneEpochs = D["finetune_epochs"],
    generations: Generations = D["generations"],
    peer: Peer = D["peer"],
    teacher_onnx: TeacherOnnx = D["teacher_onnx"],
    teacher_cmd: TeacherCmd = D["teacher_cmd"],
    blackbox_output: BlackboxOutput = D["blackbox_output"],
    seed: Seed = D["seed"],
    student: Student = D["student"],
    init_from_teacher: InitFromTeacher = D["init_from_teacher"],
    out: Out = D["out"],
    overwrite: Overwrite = D["overwrite"],
    teacher_epochs: TeacherEpochs = D["teacher_epochs"],
    bench_seconds: BenchSeconds = D["bench_seconds"],
    config: Config = None,
    resume: Resume = None,
    bench_processes: BenchProcesses = D["bench_processes"],
    augment: Augment = D["augment"],
    patience: Patience = D["patience"],
    time_budget: TimeBudget = D["time_budget"],
    seeds: Seeds = D["seeds"],
    train_threads: TrainThreads = D["train_threads"],
    checkpoint_every: CheckpointEvery = D["checkpoint_every"],
    device: Device = D["device"],
    precision: Precision = D["precision"],
    context: Context = D["context"],
    top_k: TopK = D["top_k"],
    tokenizer: Tokenizer = D["tokenizer"],
    steps: Steps = D["steps"],
    prune_vocab: PruneVocab = D["prune_vocab"],
    gkd_beta: GkdBeta = D["gkd_beta"],
    on_policy: OnPolicy = D["on_policy"],
    blackbox_form: BlackboxForm = D["blackbox_form"],
    samples: Samples = D["samples"],
    icl_shots: IclShots = D["icl_shots"],
    teacher_temperature: TeacherTemperature = D["teacher_temperature"],
    teacher_top_p: TeacherTopP = D["teacher_top_p"],
    max_new_tokens: MaxNewTokens = D["max_new_tokens"],
    max_teacher_tokens: MaxTeacherTokens = D["max_teacher_tokens"],
    teacher_retries: TeacherRetries = D["teacher_retries"],
    teacher_timeout: TeacherTimeout = D["teacher_timeout"],
    teacher_generate: TeacherGenerate = D["teacher_generate"],
    answer_check: AnswerCheck = D["answer_check"],
    evolve: Evolve = D["evolve"],
    as_json: Json = False,
    nproc: Nproc = 1,
    max_restarts: MaxRestarts = 0,
    dist_timeout: DistTimeout = 300.0,
) -> None:
    """Distil a teacher into a student sized for the target; export, quantize, bench, gate.

    Ctrl-C/SIGTERM: checkpoint at the next step, exit 130; continue with --resume OUT.

    A NaN or infinite loss or teacher output stops the run with exit code 5.

    Several workers: --nproc N here, or `torchrun ... -m edgekd distill ...` (multi-node); a
    failed worker ends the run with exit code 7 naming its rank.
    """
    from edgekd.safety import check_versions

    for message in check_versions():
        typer.echo(f"edgekd: warning: {message}", err=True)
    settings = settings_from_cli(ctx, DistillConfig, config, resume)
    report = _launch_workers_or_run(settings, resume is not None, nproc, max_restarts, dist_timeout)
    if report is not None:  # None: the workers ran, or a worker other than rank 0
        _print(report, as_json)


def _launch_workers_or_run(
    settings: DistillConfig, resume: bool, nproc: int, max_restarts: int, dist_timeout: float
) -> Report | None:
    """Start ``nproc`` workers that each run this command (None), or run here (the report)."""
    from edgekd.errors import BadInputError
    from edgekd.pipeline import distill as run_distill
    from edgekd.train.distributed import distributed_session, worker_env

    if nproc < 1:
        raise BadInputError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 or max_restarts:  # start the workers, each runs this command without --nproc
        if worker_env() is not None:
            raise BadInputError("--nproc/--max-restarts start torchrun; under torchrun, drop them")
        from edgekd.train.launch import launch_workers, worker_args

        args = worker_args(sys.argv[1:])
        if "distill" not in args:  # called from Python (CliRunner), not from a command line
            raise BadInputError("--nproc re-runs the command line: `edgekd distill ... --nproc N`")
        launch_workers(nproc, args, max_restarts)
        return None
    with distributed_session(dist_timeout, device=_worker_device(settings)) as dist:
        return run_distill(settings, resume=resume, dist=dist)


def _worker_device(settings: DistillConfig) -> str:
    """The device type workers communicate on: NCCL between GPUs, gloo between CPUs (each
    worker then takes the GPU of its local rank)."""
    from edgekd.train.device import resolve_device

    return resolve_device(settings.device).type


def _print(report: Report | dict, as_json: bool) -> None:
    from edgekd.report.markdown import print_summary

    if isinstance(report, dict):  # --task causal-lm (edgekd.lm.pipeline, edgekd.lm.blackbox)
        from edgekd.lm.blackbox.pipeline import print_blackbox_summary
        from edgekd.lm.pipeline import print_lm_summary

        if as_json:
            typer.echo(json.dumps(report, indent=2))
        elif report.get("strategy") == "blackbox":
            print_blackbox_summary(report)
        else:
            print_lm_summary(report)
        return
    if as_json:
        typer.echo(report.to_json())
        return
    print_summary(report)
    typer.echo(f"report: {report.out_dir}/report.md")
    # distill exits 0 when it produced its artifacts; `edgekd gate` is the step that fails CI.
    typer.echo(
        f"gate: {report.gate.get('verdict')} (in CI: edgekd gate {report.out_dir}/report.json)"
    )
