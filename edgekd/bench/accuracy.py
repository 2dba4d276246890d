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


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def nearest_neighbours(vectors: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each row, the index of the most cosine-similar other row (memory: chunk x N)."""
    unit = _unit(vectors)
    out = np.empty(len(unit), dtype=np.int64)
    for start in range(0, len(unit), chunk):
        sims = unit[start : start + chunk] @ unit.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # an item is not its own neighbour
        out[start : start + chunk] = sims.argmax(-1)
    return out


def embedding_metrics(
    vectors: np.ndarray, teacher_vectors: np.ndarray | None
) -> dict[str, float | None]:
    """Fidelity of embeddings to the teacher's on the same items.

    ``cosine_to_teacher``: mean cosine similarity between each item's vector and the teacher's.
    ``nn_agreement``: share of items whose nearest neighbour (cosine, among the other items) is
    the same item under the model as under the teacher.
    """
    if teacher_vectors is None or len(vectors) < 2:
        return {"cosine_to_teacher": None, "nn_agreement": None}
    if vectors.shape != teacher_vectors.shape:
        return {"cosine_to_teacher": None, "nn_agreement": None}
    cosine = float((_unit(vectors) * _unit(teacher_vectors)).sum(-1).mean())
    agree = float((nearest_neighbours(vectors) == nearest_neighbours(teacher_vectors)).mean())
    return {"cosine_to_teacher": cosine, "nn_agreement": agree}
