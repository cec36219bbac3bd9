"""A benchmark's helper processes end with the benchmark."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> bool:
    """Ask Linux to end this process when its parent dies (PR_SET_PDEATHSIG): a benchmark
    killed mid-run otherwise leaves its pool's processes and its image host behind, to
    disturb the next run. False where that cannot be asked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
