"""Model affinity: a free server asks first for work it can run without loading a model.

Loading an SDXL checkpoint or a video model takes seconds to tens of seconds, so a server that
has one loaded (the files the last job it ran read: :attr:`Server.loaded`) asks first for the
models it last ran or that read one of those files ("warm"), and for the others only when the
warm models have no work. So that no model starves, a model whose oldest waiting job has waited
longer than ``wait_s`` is asked first, before the warm ones; one server then loads it and keeps
serving it. The order applies within each lane: any interactive job still comes before any
batch job.

Why not a JetStream mechanism: priority groups decide which waiting *pull request* gets a
message (``pinned_client`` sends a consumer's messages to one client until it goes idle;
``overflow`` serves a client only while ``num_pending`` is above a threshold). A server here
never keeps a pull request waiting (it fetches with ``no_wait`` only when free), and it chooses
among several models' consumers, which no consumer-level policy sees; ``overflow`` would bound
queue length, not how long a job has waited. So the choice is the fetch order, and the
starvation bound reads the age of each other model's next job from the stream.
"""

from __future__ import annotations

from collections.abc import Sequence

from comfyline.catalogue import Catalogue, UnknownModel

from .fetch import WorkFetcher
from .servers import Server


class Affinity:
    """Orders the models a free server asks for work."""

    def __init__(self, fetcher: WorkFetcher, catalogue: Catalogue, wait_s: float) -> None:
        self.fetcher = fetcher
        self.catalogue = catalogue
        self.wait_s = wait_s

    def warm(self, server: Server, model: str) -> bool:
        """True when ``server`` last ran ``model``, or has one of its model files loaded (a
        job's input may choose among several, e.g. a preset's checkpoint)."""
        if model == server.last_model:
            return True
        try:
            files = {m.file for m in self.catalogue.get(model).required_models}
        except UnknownModel:
            return False
        return bool(files & set(server.loaded))

    async def order(self, server: Server, models: Sequence[str]) -> list[str]:
        """Starving models, then warm ones, then the rest (each group in the given order)."""
        warm = [m for m in models if self.warm(server, m)]
        cold = [m for m in models if m not in warm]
        if not warm or not cold:
            return list(models)  # one group: nothing to reorder, no need to read the stream
        waiting = await self.fetcher.waiting_models()
        starving = [m for m in cold if m in waiting and await self.fetcher.waited(m) >= self.wait_s]
        return starving + warm + [m for m in cold if m not in starving]
