"""Causal language models, white-box (``edgekd distill --task causal-lm``): text into token
blocks (``data.py``), the teacher and its tokenizer (``teacher.py``), its outputs cached as top-k
log-probabilities (``topk.py``), the student family (``student.py``), training (``train.py``),
vocabulary pruning (``vocab.py``), sizing, export, quantization and bench, and the run that ties
them together (``pipeline.py``).
"""
