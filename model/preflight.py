"""The preflight of the bundled workload: ``python -m model.train --preflight``.

The supervisor runs it before every launch of a model preset and reads its lines
(``PASS name: evidence`` / ``FAIL name: evidence``): gradient flow guards M-032 (a
component that never learns), ``seq_len`` guards M-008 (inputs silently truncated), and
the data checks verify every cached file against its task's rule.
"""

from __future__ import annotations

from pathlib import Path

import torch

from model.config import TrainConfig
from model.data import TASKS, DataError, ensure_data, verify_file
from model.model import BITS, BitGPT, check_gradient_flow

__all__ = ["preflight"]


def preflight(cfg: TrainConfig) -> int:
    """One line per check, PASS or FAIL with evidence; 0 when all pass."""
    results: list[tuple[bool, str]] = []  # (passed, "name: evidence")

    torch.manual_seed(cfg.seed)
    model = BitGPT(cfg.model_config())
    x = torch.randint(0, 2, (4, cfg.seq_len, BITS)).float()
    y = torch.randint(0, 2, (4, cfg.seq_len, BITS)).float()
    bad = check_gradient_flow(model, (x, y))
    n = len(list(model.parameters()))
    if bad:
        why = f"{len(bad)}/{n} parameters frozen or without a finite non-zero gradient"
        results.append((False, f"gradient flow: {why}: {', '.join(bad)}"))
    else:
        why = f"all {n} parameters ({model.num_params():,} weights) get a finite non-zero gradient"
        results.append((True, f"gradient flow: {why}"))

    for split in ("train", "val"):
        try:
            path, made = ensure_data(Path(cfg.data_dir), cfg.task, split, cfg.seed)
            data = verify_file(path, cfg.task)
            how = "generated and verified" if made else "verified"
            results.append(
                (
                    True,
                    f"data {split}: {path}: {len(data)} positions {how} "
                    f"against the {cfg.task} rule",
                )
            )
        except DataError as exc:
            results.append((False, f"data {split}: {exc} (delete it: it is rebuilt from the seed)"))

    need = TASKS[cfg.task].min_seq_len
    ok = cfg.seq_len >= need
    results.append(
        (
            ok,
            f"seq_len: {cfg.seq_len} {'>=' if ok else '<'} {need}, the minimum for "
            f"{cfg.task} (groups of {TASKS[cfg.task].group} positions)",
        )
    )

    for ok, line in results:
        print(f"{'PASS' if ok else 'FAIL'} {line}", flush=True)
    return 0 if all(ok for ok, _ in results) else 1
