"""How many evaluations run at once in one lab server: the CPU's cores divided by torch's threads.

Every learner's session is a thread of the same Streamlit process; two evaluations at once would
each start torch's thread pool on the same cores, and two pools fighting for 2 cores slowed a
training run here from 17 steps/s to 0.6. So :data:`GATE` lets at most ``slots`` evaluations compute
at a time (one on a 2-core machine with 2 torch threads) and queues the rest in arrival order; the
page shows a learner how many changes are ahead of theirs while they wait.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager


class EvalGate:
    """At most ``slots`` holders at once; :meth:`ahead` tells a newcomer how many are running or waiting."""

    def __init__(self, slots: int | None = None):
        if slots is None:
            import torch

            slots = max(1, (os.cpu_count() or 1) // max(1, torch.get_num_threads()))
        if slots < 1:
            raise ValueError(f"an evaluation gate needs at least 1 slot, got {slots}")
        self.slots = slots
        self._cond = threading.Condition()
        self._running = 0
        self._waiting = 0

    def ahead(self) -> int:
        """Evaluations a new one would wait behind (0: it starts at once)."""
        with self._cond:
            return self._waiting + max(0, self._running - self.slots + 1)

    @contextmanager
    def __call__(self):
        with self._cond:
            self._waiting += 1
            while self._running >= self.slots:
                self._cond.wait()
            self._waiting -= 1
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify()


#: the gate every live evaluation of this process passes (LiveLab's measurements)
GATE = EvalGate()
