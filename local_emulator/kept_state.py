"""What `--data-dir` keeps of moto's services (objects, queued messages, secrets), restored
at start, then kept as it changes until stop. The database keeps itself (mongoeco's SQLite
engine in the same directory); the directory's layout and lock: data_dir.py."""

from __future__ import annotations

from collections.abc import Callable

from local_emulator.data_dir import DataDir
from local_emulator.kept_objects import KeptObjects
from local_emulator.kept_queues import QueueJournal
from local_emulator.kept_secrets import KeptSecrets


class KeptState:
    def __init__(self, data_dir: DataDir) -> None:
        self.objects = KeptObjects(data_dir.objects)
        self.queues = QueueJournal(data_dir.queues)
        self.secrets = KeptSecrets(data_dir.secrets)

    def restore(self, warn: Callable[[str], None]) -> dict[str, int]:
        """Everything kept back into moto (before anything runs on it), then kept from now
        on. How many of each were restored."""
        counts = {
            "objects": self.objects.restore(warn),
            "queued messages": self.queues.restore(warn),
            "secrets": self.secrets.restore(),
        }
        self.objects.activate()
        self.queues.activate()
        self.secrets.activate()
        return counts

    def close(self) -> None:
        """Nothing more is kept (before moto forgets everything on stop)."""
        self.secrets.deactivate()
        self.objects.deactivate()
        self.queues.close()
