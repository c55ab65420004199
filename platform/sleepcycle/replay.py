"""A bounded replay buffer: a fixed fraction of every earlier day's records, sampled when the day ends.

Replaying all of history is a near-perfect but ever-growing fix that deployments cannot afford
(ENV.md calibration), so every method that replays draws from the same small buffer: by default 10%
of all records seen so far, day 0 included. Sampling is stratified per day and seeded, so two methods
with the same seed replay exactly the same records.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass
class ReplayBuffer:
    fraction: float
    seed: int = 0
    records: list[str] = field(default_factory=list)
    seen: int = 0

    def add_day(self, day: int, texts: list[str]) -> None:
        """Keep ceil(fraction * len(texts)) of the day's records (none if fraction is 0)."""
        self.seen += len(texts)
        if self.fraction <= 0 or not texts:
            return
        k = min(len(texts), math.ceil(self.fraction * len(texts)))
        self.records += random.Random(f"replay-{self.seed}-{day}").sample(texts, k)

    def __len__(self) -> int:
        return len(self.records)
