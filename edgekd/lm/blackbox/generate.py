"""A local causal LM used only through generation (``--teacher-generate FOLDER``).

The model is asked exactly what a command teacher would be (the same requests, the same record in
``teacher_data.jsonl``): its weights never reach the loss. Each request is sampled with its own
seed (the run's seed and the request id), so answers do not depend on how requests were batched,
and a cached answer is the answer a fresh run would give.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from edgekd.lm.blackbox.teachers import CallLog, TeacherReply, TeacherRequest


def request_seed(request: TeacherRequest) -> int:
    digest = hashlib.sha256(f"{request.seed}:{request.id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class GeneratingTeacher:
    """A ``transformers``-style model (``generate``) and its tokenizer, run on ``device``."""

    def __init__(self, model: Any, tokenizer: Any, identity: str, device: str = "cpu") -> None:
        self.model, self.tokenizer, self.device = model.eval().to(device), tokenizer, device
        self.identity = f"generate:{identity}"

    def answer(self, requests: Sequence[TeacherRequest], log: CallLog) -> list[TeacherReply]:
        log.calls += 1
        return [self._one(request) for request in requests]

    def _one(self, request: TeacherRequest) -> TeacherReply:
        import torch

        enc = self.tokenizer(request.prompt, return_tensors="pt").to(self.device)
        eos = self.tokenizer.eos_token_id
        sample = request.temperature > 0
        options: dict[str, Any] = {"max_new_tokens": request.max_new_tokens, "do_sample": sample}
        if sample:
            options.update(temperature=request.temperature, top_p=request.top_p)
        torch.manual_seed(request_seed(request))
        with torch.inference_mode():
            out = self.model.generate(
                **enc, num_return_sequences=request.n, pad_token_id=eos, eos_token_id=eos,
                **options,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        texts, reasons = [], []
        for row in new.tolist():
            stopped = eos is not None and eos in row
            if stopped:
                row = row[: row.index(eos)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True))
            reasons.append("stop" if stopped or len(row) < request.max_new_tokens else "length")
        return TeacherReply(request.id, tuple(texts), tuple(reasons))
