"""The bundled training workload: a small causal transformer learning bit-stream tasks.

Run it with ``python -m model.train --task echo`` (see ``model/train.py``). The trainer
is not imported here so that ``python -m model.train`` runs it without a second import.
"""

from __future__ import annotations

from model.data import (
    TASKS,
    DataError,
    Task,
    WindowSampler,
    default_data_dir,
    ensure_data,
    load_bits,
    verify_file,
)
from model.model import BITS, BitGPT, GPTConfig, check_gradient_flow

__all__ = [
    "BITS",
    "TASKS",
    "BitGPT",
    "DataError",
    "GPTConfig",
    "Task",
    "WindowSampler",
    "check_gradient_flow",
    "default_data_dir",
    "ensure_data",
    "load_bits",
    "verify_file",
]
