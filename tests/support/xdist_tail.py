"""With pytest-xdist: tests marked ``alone`` run at the very end, on one worker, once every other
worker has finished.

Most tests only wait (for the engine, a health gate, dockerd's retries, etcd) and run well two
at a time on two cores. A few must not share the machine: the fleet tests (dozens of agents
and timing they assert), the tests that remove shared images, and those that stop dockerd
(marked ``engine_restart``, which implies ``alone``). This scheduler is xdist's ``load``
otherwise: it holds those tests back until the other work is done, shuts every other worker
down, waits until they have finished, and then sends the held tests, in collection order, to
the one worker left.

xdist's controller does not collect, so it cannot see markers: each worker writes the node ids
of its ``alone`` tests into a folder the controller named (``tests/conftest.py``), before it
reports its collection. The worker that is to run the held tests may keep one test of its own
waiting meanwhile: an xdist worker starts a test only once it knows the next one.
"""

from __future__ import annotations

import json
from itertools import cycle
from pathlib import Path

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScheduling
from xdist.workermanage import WorkerController

def read_alone(folder: Path) -> set[str]:
    """The node ids every worker said must run alone (one JSON list per worker)."""
    found: set[str] = set()
    for path in folder.glob("*.json"):
        found.update(json.loads(path.read_text()))
    return found


class TailScheduling(LoadScheduling):
    def __init__(self, config: pytest.Config, log: Producer | None, alone_dir: Path) -> None:
        super().__init__(config, log)
        self.alone_dir = alone_dir
        self.held: list[int] = []  # indices of the tests that run alone, until their turn
        self.tail: WorkerController | None = None  # the worker that will run them

    @property
    def tests_finished(self) -> bool:
        return not self.held and super().tests_finished

    @property
    def has_pending(self) -> bool:
        return bool(self.held) or super().has_pending

    def schedule(self) -> None:
        """xdist's ``LoadScheduling.schedule``, with the ``alone`` tests held back."""
        assert self.collection_is_completed
        if self.collection is not None:
            for node in self.nodes:
                self.check_schedule(node)
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = next(iter(self.node2collection.values()))
        alone = read_alone(self.alone_dir)
        self.held = [i for i, nodeid in enumerate(self.collection) if nodeid in alone]
        self.pending[:] = [i for i, nodeid in enumerate(self.collection) if nodeid not in alone]
        if not self.collection:
            return
        if self.maxschedchunk is None:
            self.maxschedchunk = len(self.collection)
        if len(self.pending) < 2 * len(self.nodes):
            nodes = cycle(self.nodes)
            for _ in range(len(self.pending)):
                self._send_tests(next(nodes), 1)
        else:
            items_per_node = len(self.pending) // len(self.node2pending)
            chunk = max(min(items_per_node // 4, self.maxschedchunk), 2)
            for node in self.nodes:
                self._send_tests(node, chunk)
        if not self.pending:
            for node in self.nodes:
                self._depleted(node)

    def check_schedule(self, node: WorkerController, duration: float = 0) -> None:
        if node.shutting_down:
            return
        if self.pending:
            super().check_schedule(node, duration)
        else:
            self._depleted(node)

    def _depleted(self, node: WorkerController) -> None:
        """Nothing but the held tests is left for ``node``: the first such worker keeps itself for
        them, every other one is shut down (it finishes what it has first)."""
        if not self.held:
            node.shutdown()
            return
        if self.tail is None or self.tail not in self.node2pending:
            self.tail = node
        if node is not self.tail:
            node.shutdown()
            return
        self._release()

    def _release(self) -> None:
        if not self.held or self.tail is None or self.nodes != [self.tail]:
            return
        self.log(f"running {len(self.held)} tests alone on {self.tail.gateway.id}")
        held, self.held = self.held, []
        self.node2pending[self.tail].extend(held)
        self.tail.send_runtest_some(held)
        self.tail.shutdown()  # nothing else will come

    def remove_node(self, node: WorkerController) -> str | None:
        crashed = super().remove_node(node)  # a crashed worker's unfinished tests go back to pending
        if node is self.tail:
            self.tail = None  # it crashed: xdist starts a new worker, which is scheduled anew
        else:
            self._release()
        return crashed
