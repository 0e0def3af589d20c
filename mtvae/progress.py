"""Progress reporting: tqdm bars interactively, one log line per epoch in batch mode.

Batch mode is on when ``MTVAE_BATCH=1`` (set by ``python -m mtvae regenerate`` for the
papermill kernels) so executed chapters are not flooded with progress bars. Per-epoch
lines go to the ``mtvae`` logger; when ``MTVAE_LOG`` names a file they are appended there
(the regeneration log), otherwise they go to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from mtvae.errors import check_choice

MODES = ("auto", "bar", "log", "none")
logger = logging.getLogger("mtvae")


def batch_mode() -> bool:
    return os.environ.get("MTVAE_BATCH", "") not in ("", "0")


def _configure_logger() -> None:
    if logger.handlers:
        return
    path = os.environ.get("MTVAE_LOG")
    handler: logging.Handler = (
        logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class EpochProgress:
    """Reports the end of each epoch with a dict of metrics."""

    def __init__(self, total: int, desc: str, mode: str = "auto", initial: int = 0) -> None:
        mode = check_choice("progress mode", mode, MODES)
        if mode == "auto":
            mode = "log" if batch_mode() else "bar"
        self.mode, self.desc, self.total = mode, desc, total
        self.bar = None
        if mode == "bar":  # imported here so batch mode never loads notebook widgets
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False)
        if mode == "log":
            _configure_logger()

    def update(self, epoch: int, metrics: dict[str, Any]) -> None:
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in metrics.items())
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(text, refresh=False)
        elif self.mode == "log":
            logger.info("%s epoch %d/%d %s", self.desc, epoch, self.total, text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
