"""Causal language models (``edgekd distill --task causal-lm``): the student family, data, teachers,
training, export with a KV cache, weight-only quantization, sizing to a target's LM budget lines,
the LM benchmark, and black-box distillation from teacher-written text (``lm/blackbox/``). See
ARCHITECTURE.md for which file owns what."""
