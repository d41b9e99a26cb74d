"""A pool of asyncio workers drains a queue of prompts against an OpenAI-style API, within
its requests-per-minute and tokens-per-minute limits (scaled down here to 20 requests and
2 400 tokens per 2 s so the run is short).

Each worker asks permitd for a permit costing its token estimate, waiting in permitd's
queue (not in a sleep loop), then reports the answer with the tokens really used, so
permitd refunds the difference. Run with a permitd on $PERMITD_TARGET:

    python openai_worker_pool.py
"""

import asyncio
import time

import aiohttp

import permitd
from fake_upstream import upstream_url
from permitd import Limit

RESOURCE = "example:openai-chat"
PROMPTS = [f"Summarise ticket {i}: " + "the customer cannot log in " * (i % 5 + 1) for i in range(40)]


async def main() -> None:
    url = upstream_url()
    async with permitd.AsyncClient() as pd, aiohttp.ClientSession() as http:
        await pd.put_resource(
            RESOURCE,
            limits=[Limit("requests", 20, 2), Limit("tokens", 2400, 2)],
            concurrency=8,
        )
        queue: "asyncio.Queue[str]" = asyncio.Queue()
        for p in PROMPTS:
            queue.put_nowait(p)
        answers = []

        async def worker() -> None:
            while not queue.empty():
                prompt = queue.get_nowait()
                estimate = len(prompt.split()) + 100  # prompt tokens + max_tokens
                async with pd.permit(RESOURCE, cost={"tokens": estimate}, max_wait=60) as p:
                    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}
                    async with http.post(f"{url}/v1/chat/completions", json=body) as r:
                        data = await r.json()
                        used = data.get("usage", {}).get("total_tokens")
                        outcome = await p.report(r, actual_cost={"tokens": used} if used else None)
                if r.status == 200:
                    answers.append(data["choices"][0]["message"]["content"])
                else:  # permitd paused the resource for everyone; try this prompt later
                    await asyncio.sleep(outcome.retry_after)
                    queue.put_nowait(prompt)

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(8)))
        took = time.monotonic() - t0
        async with http.get(f"{url}/stats") as r:
            stats = await r.json()
    print(f"RESULT openai_worker_pool prompts={len(answers)} seconds={took:.1f} "
          f"upstream_calls={stats['chat']} upstream_429={stats.get('chat_429', 0)}")
    assert len(answers) == len(PROMPTS)


if __name__ == "__main__":
    asyncio.run(main())
