"""Knowledge distillation proper: methods (one paper per file), strategies, the job they share.

Kept free of heavy imports: the CLI and ``edgekd.config`` read the defaults below at ``--help``.
"""

# Hinton et al. (2015) used T in [2, 20]; 4 is the common default in RepDistiller and torchdistill.
# The one place this default is written: DistillConfig, the CLI option and the losses read it here.
DEFAULT_TEMPERATURE = 4.0
