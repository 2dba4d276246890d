"""Causal language models (``edgekd distill --task causal-lm``): the student family, data, teachers,
training, export with a KV cache, weight-only quantization, sizing to a target's LM budget lines,
and the LM benchmark. See ARCHITECTURE.md for which file owns what."""
