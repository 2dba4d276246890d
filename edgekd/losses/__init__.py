"""Distillation losses as plain functions over tensors, batch-averaged, one paper per file."""

from edgekd.losses.kd import kd

__all__ = ["kd"]
