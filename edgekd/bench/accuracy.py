"""Accuracy and fidelity: top-1/top-5 accuracy, agreement with the teacher, KL to the teacher."""

from __future__ import annotations

import numpy as np

from edgekd.data import Split


def predict(session, split: Split, batch_size: int = 256) -> np.ndarray:
    """Run ``session`` over ``split`` in batches and return the stacked logits."""
    outs = [session.run(b.inputs) for _, b in split.batches(batch_size)]
    return np.concatenate(outs).astype(np.float64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def classification_metrics(
    logits: np.ndarray, y: np.ndarray | None, teacher_logits: np.ndarray | None = None
) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        "accuracy": None,
        "top5_accuracy": None,
        "agreement_with_teacher": None,
        "kl_to_teacher": None,
    }
    if y is not None:
        out["accuracy"] = float((logits.argmax(-1) == y).mean())
        if logits.shape[-1] > 5:
            top5 = np.argsort(-logits, axis=-1)[:, :5]
            out["top5_accuracy"] = float((top5 == y[:, None]).any(-1).mean())
    if teacher_logits is not None:
        out["agreement_with_teacher"] = float(
            (logits.argmax(-1) == teacher_logits.argmax(-1)).mean()
        )
        log_p, log_q = _log_softmax(teacher_logits), _log_softmax(logits)
        out["kl_to_teacher"] = float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean())
    return out
