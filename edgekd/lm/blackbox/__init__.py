"""Black-box language-model distillation: the student learns from what a teacher writes.

The teacher is reachable only through generation (an external command, or a local Hugging Face
folder run only through ``generate``). The stage runs in this order:

    records.py   read ``--data prompts.jsonl`` ({"prompt", "answer"?} per line)
    forms.py     turn each record into teacher requests for the chosen form (answers, rationales,
                 in-context examples) and the teacher's texts back into training examples
    teachers.py  the command protocol (``CMD REQUESTS.jsonl ANSWERS.jsonl``, no shell, a timeout)
    stage.py     generation as a recorded, resumable, cached and budgeted stage
    filters.py   drop empty, truncated, over-long, duplicate and check-failing answers, counted
    tasks.py     locally generated tasks with computed answers (benchmarks and tests)
"""
