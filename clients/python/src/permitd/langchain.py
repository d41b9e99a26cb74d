"""A LangChain rate limiter shared by every process of a fleet::

    from langchain_openai import ChatOpenAI
    import permitd, permitd.langchain

    limiter = permitd.langchain.PermitdRateLimiter(permitd.Client(), "openai:gpt-4o")
    model = ChatOpenAI(model="gpt-4o", rate_limiter=limiter)

LangChain asks a rate limiter once per model call, before it, and tells it nothing about
the call (not its size, not the answer), so this limiter takes one permit of ``resource``
per call — ``cost`` (a mapping, or a function of no arguments) adds an estimate of the
tokens — and gives the permit back at once: it limits how often calls start, across every
process and host that shares the resource, not how many run. To learn the model's real
limits from its headers and reconcile each call's tokens, give the model's HTTP client the
transport instead (``ChatOpenAI(http_client=httpx.Client(transport=
permitd.httpx.PermitTransport(...)))``); use both only on different resources, or each
call pays twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Mapping, Optional, Union

from langchain_core.rate_limiters import BaseRateLimiter

from . import _core as core
from . import errors
from .aio import AsyncClient
from .client import Client

__all__ = ["PermitdRateLimiter"]

CostLike = Union[None, Mapping[str, int], Callable[[], Optional[Mapping[str, int]]]]


class PermitdRateLimiter(BaseRateLimiter):
    """``acquire(blocking=True)`` waits in permitd's queue (up to ``max_wait`` per attempt,
    asking again as permitd advises) until a permit is granted, and returns True;
    ``blocking=False`` asks once and returns whether it was granted. ``aacquire`` is the
    same for asyncio, on ``async_client`` when given (else the sync client, off the loop).
    """

    def __init__(
        self,
        client: Client,
        resource: str,
        *,
        cost: CostLike = None,
        partition: str = "",
        max_wait: float = 30.0,
        priority: int = 0,
        async_client: Optional[AsyncClient] = None,
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be a permitd.Client, not {type(client).__name__}")
        if async_client is not None and not isinstance(async_client, AsyncClient):
            raise TypeError(f"async_client must be a permitd.AsyncClient, not {type(async_client).__name__}")
        if not (cost is None or callable(cost)):
            core.check_cost(cost, "cost")
        self.client = client
        self.async_client = async_client
        self.resource = core.check_name(resource, "resource")
        self.partition = partition
        self.cost = cost
        self.max_wait = core.check_seconds(max_wait, "max_wait", allow_zero=False, optional=False) or 30.0
        self.priority = core.check_int(priority, "priority", -(1 << 31), (1 << 31) - 1)

    def _cost(self) -> Optional[Mapping[str, int]]:
        return self.cost() if callable(self.cost) else self.cost

    def acquire(self, *, blocking: bool = True) -> bool:
        while True:
            try:
                p = self.client.acquire(
                    self.resource,
                    cost=self._cost(),
                    partition=self.partition,
                    max_wait=self.max_wait if blocking else None,
                    priority=self.priority,
                )
            except errors.PermitDenied as e:
                if not blocking:
                    return False
                time.sleep(e.retry_after)
                continue
            # The call is counted; the permit holds no slot past its start.
            p.release()
            return True

    async def aacquire(self, *, blocking: bool = True) -> bool:
        if self.async_client is None:
            return await asyncio.to_thread(self.acquire, blocking=blocking)
        while True:
            try:
                p = await self.async_client.acquire(
                    self.resource,
                    cost=self._cost(),
                    partition=self.partition,
                    max_wait=self.max_wait if blocking else None,
                    priority=self.priority,
                )
            except errors.PermitDenied as e:
                if not blocking:
                    return False
                await asyncio.sleep(e.retry_after)
                continue
            await p.release()
            return True
