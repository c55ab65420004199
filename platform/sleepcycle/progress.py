"""Progress bars for long work (tqdm on a terminal, quiet otherwise or when SLEEPCYCLE_QUIET=1)."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def quiet() -> bool:
    """No progress bars: not on a terminal, or SLEEPCYCLE_QUIET=1."""
    return os.environ.get("SLEEPCYCLE_QUIET") == "1" or not sys.stderr.isatty()


def progress(total: int | None = None, desc: str = "", unit: str = "it") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=quiet(), leave=False, dynamic_ncols=True)
