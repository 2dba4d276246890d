"""Distillation losses as plain functions over tensors, batch-averaged, one paper per file.

Teacher inputs are detached: gradients reach the student only. Shape mismatches raise
``edgekd.errors.BadInputError`` (a ``ValueError``).
"""

from edgekd.losses.at import at
from edgekd.losses.dkd import dkd
from edgekd.losses.fitnet import fitnet
from edgekd.losses.kd import kd
from edgekd.losses.mse_logits import mse_logits
from edgekd.losses.pkt import pkt
from edgekd.losses.rkd import rkd
from edgekd.losses.sp import sp

__all__ = ["at", "dkd", "fitnet", "kd", "mse_logits", "pkt", "rkd", "sp"]
