"""Language models: causal-LM distillation (``edgekd distill --task causal-lm``)."""
