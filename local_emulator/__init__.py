"""The whole pipeline on one machine: `python -m local_emulator serve|demo`.

`local_emulator.stack.Emulator` runs the same stack in-process (for tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_emulator.stack import Emulator

__all__ = ["Emulator"]


def __getattr__(name: str) -> Any:
    if name == "Emulator":
        from local_emulator.stack import Emulator

        return Emulator
    raise AttributeError(name)
