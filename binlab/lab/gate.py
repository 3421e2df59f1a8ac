"""How many evaluations run at once in one lab server: the CPU's cores divided by torch's threads.

Every learner's session is a thread of the same Streamlit process; two evaluations at once would
each start torch's thread pool on the same cores, and two pools fighting for 2 cores slowed a
training run here from 17 steps/s to 0.6. So :data:`GATE` lets at most ``slots`` evaluations compute
at a time (one on a 2-core machine with 2 torch threads) and queues the rest; the page shows a learner
how many changes are ahead of theirs while they wait.

Waiting evaluations go by priority, then arrival: a first look (a small slice of rows, ``priority=1``)
goes ahead of full evaluations (``priority=0``), so that with many learners each one sees first
numbers after the running evaluation and the first looks ahead of theirs, not after every full
evaluation queued before them. A full evaluation waits while first looks keep arriving; each learner's
first look is followed by their own full evaluation, so the queue drains when the class pauses.

A running evaluation does not hold its slot to the end: a full evaluation calls the handle's
:meth:`Turn.checkpoint` between batches, which hands the slot to waiting first looks and takes it back,
ahead of later full evaluations, when they are done. So a first look waits for one batch of a running
full evaluation (32 rows, :data:`binlab.lab.live.LIVE_BATCH`: about 0.01 s on ``scratch`` and 0.08 s on
``minilm-l2``, from the live-loop benches' 1,000-row times), not for all of it (0.34 s and 2.5 s).

An evaluation whose learner has made a newer change need not finish: a holder or waiter given a
``superseded`` check (the page's: "has this learner changed something since?") stops with
:class:`Superseded` where it stands, while it waits for a slot (checked every :data:`POLL_S`) or
between batches, and leaves its slot or place in line to the others.
"""
from __future__ import annotations

import heapq
import itertools
import os
import threading
from contextlib import contextmanager

#: how often a waiter with a ``superseded`` check looks at it, seconds
POLL_S = 0.05


class Superseded(Exception):
    """The learner made a newer change: this evaluation stopped before its end, its numbers unmeasured."""


class EvalGate:
    """At most ``slots`` holders at once; :meth:`ahead` tells a newcomer how many are running or waiting."""

    def __init__(self, slots: int | None = None):
        if slots is None:
            import torch

            slots = max(1, (os.cpu_count() or 1) // max(1, torch.get_num_threads()))
        if slots < 1:
            raise ValueError(f"an evaluation gate needs at least 1 slot, got {slots}")
        self.slots = slots
        self.step_aside = True  # Turn.checkpoint hands the slot to waiting higher priorities (False: it never does; benches compare)
        self._cond = threading.Condition()
        self._running = 0
        self._queue: list[tuple[int, int]] = []  # (-priority, ticket) of the waiting ones, a heap: its head goes next
        self._tickets = itertools.count()

    def ahead(self, priority: int = 0) -> int:
        """Evaluations a new one of ``priority`` would wait behind (0: it starts at once): those running
        beyond the last free slot, and those waiting with the same or a higher priority."""
        with self._cond:
            return sum(1 for p, _ in self._queue if -p >= priority) + max(0, self._running - self.slots + 1)

    def _enter(self, me: tuple[int, int], superseded=None) -> None:  # with self._cond held: wait in line, then take a slot
        heapq.heappush(self._queue, me)
        try:
            while self._running >= self.slots or self._queue[0] != me:
                self._cond.wait(None if superseded is None else POLL_S)
                if superseded is not None and superseded():
                    raise Superseded()
        except BaseException:  # interrupted while waiting: leave the line, or everyone behind would wait forever
            self._queue.remove(me)
            heapq.heapify(self._queue)
            self._cond.notify_all()
            raise
        heapq.heappop(self._queue)
        self._running += 1
        self._cond.notify_all()  # a free slot may remain for the next in line

    @contextmanager
    def __call__(self, priority: int = 0, superseded=None):
        """Hold a slot for the block; yields a :class:`Turn` whose ``checkpoint()`` lets higher-priority
        waiters go first. ``superseded``: a check (no arguments, True when the evaluation is no longer wanted)
        made while waiting for the slot and at each checkpoint, which then raise :class:`Superseded`."""
        with self._cond:
            turn = Turn(self, (-priority, next(self._tickets)), superseded)
            self._enter(turn.me, superseded)
            turn.held = True
        try:
            yield turn
        finally:
            with self._cond:
                if turn.held:  # not when a checkpoint was interrupted while it waited to come back
                    self._running -= 1
                    turn.held = False
                self._cond.notify_all()  # the next in line may be any waiter


class Turn:
    """A holder's place in an :class:`EvalGate` (what ``with gate(priority) as turn`` gives)."""

    def __init__(self, gate: EvalGate, me: tuple[int, int], superseded=None):
        self.gate, self.me, self.superseded = gate, me, superseded
        self.held = False  # whether this turn holds a slot now
        self.yielded = 0  # how many times it stepped aside

    def checkpoint(self) -> None:
        """If an evaluation of higher priority is waiting, hand it this slot and wait until it is done,
        then go on ahead of every waiter of this priority that arrived later (this turn keeps its ticket).
        Cheap when nobody of higher priority waits: call it between batches. Raises :class:`Superseded` when
        the turn's ``superseded`` check says so (here, or while it waits to come back)."""
        if self.superseded is not None and self.superseded():
            raise Superseded()
        g = self.gate
        with g._cond:
            if not self.held or not g.step_aside or not g._queue or g._queue[0][0] >= self.me[0]:
                return  # outside its block, or the head of the line does not outrank this turn
            g._running -= 1
            self.held = False
            g._cond.notify_all()
            g._enter(self.me, self.superseded)
            self.held = True
            self.yielded += 1


#: the gate every live evaluation of this process passes (LiveLab's measurements)
GATE = EvalGate()
