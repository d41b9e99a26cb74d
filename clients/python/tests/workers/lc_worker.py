"""One process of LangChain fake chat models sharing a PermitdRateLimiter (the LangChain
test starts two): ``python -m tests.workers.lc_worker TARGET RESOURCE CALLS START_AT``.
Prints one JSON line: the wall-clock time of each model call."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, List, Optional

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import BaseMessage

import permitd
from permitd.langchain import PermitdRateLimiter

CALLS: List[float] = []


class TimedModel(FakeListChatModel):
    """A fake chat model that notes when each call reaches the "model"."""

    def _call(
        self,
        messages: List[BaseMessage],
        stop: Optional[List[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> str:
        CALLS.append(time.time())
        return super()._call(messages, stop, run_manager, **kwargs)


def main() -> None:
    target, resource, calls, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with permitd.Client(target) as pd:
        model = TimedModel(responses=["ok"], rate_limiter=PermitdRateLimiter(pd, resource, cost={"tokens": 10}))
        time.sleep(max(0.0, start_at - time.time()))  # both processes start together
        for i in range(calls):
            model.invoke(f"hello {i}")
    print(json.dumps(CALLS))


if __name__ == "__main__":
    main()
