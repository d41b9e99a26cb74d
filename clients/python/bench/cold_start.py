"""A cold start through the drop-in transport, against the test suite's local LLM upstream:
16 workers of unchanged SDK calls, the resource defined with no limits (learning from the
headers). Prints the upstream's 429s, the utilisation and the limits permitd learned.

    python bench/cold_start.py --api anthropic --rate 30 --event-gap 0.05 --calls 10
    python bench/cold_start.py ... --without-answered-at   # reports read as of the report

Needs the test extras (``pip install ".[test]"``) and ``$PERMITD_BIN`` (or target/release).
``--event-gap`` streams each answer (six events that far apart); 0 answers whole bodies.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import permitd  # noqa: E402
import permitd._gate  # noqa: E402
from tests.conftest import permitd_binary, start_server, stop_server  # noqa: E402
from tests.llm_upstream import LLMUpstream, Shape  # noqa: E402
from tests.test_dropin_sdks import call, define, prompt, sdk  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", choices=["openai", "anthropic"], default="anthropic")
    ap.add_argument("--rate", type=float, default=20.0, help="upstream requests/s (burst as large)")
    ap.add_argument("--tokens", type=float, default=100_000.0, help="upstream tokens/s")
    ap.add_argument("--event-gap", type=float, default=0.0)
    ap.add_argument("--calls", type=int, default=10, help="calls per worker")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--without-answered-at", action="store_true")
    a = ap.parse_args()
    if a.without_answered_at:
        report = permitd._gate.report
        permitd._gate.report = lambda p, s, h, c, at=None: report(p, s, h, c, None)  # type: ignore[assignment]
    server = start_server(permitd_binary(), tempfile.mkdtemp())
    up = LLMUpstream(event_gap=a.event_gap)
    try:
        pd = permitd.Client(server.target)
        model = f"m-{uuid.uuid4().hex[:8]}"
        up.model(a.api, model, Shape(requests=(a.rate, int(a.rate)), tokens=(a.tokens, int(a.tokens))))
        name = define(pd, a.api, model, [], learn_from_headers=True)
        c = sdk(a.api, up.base, pd)
        streamed = a.event_gap > 0

        def worker(i: int) -> None:
            rng = random.Random(i)
            for _ in range(a.calls):
                kw = {}
                if streamed:
                    kw = {"stream": True, **({"stream_options": {"include_usage": True}} if a.api == "openai" else {})}
                got = call(a.api, c, model, prompt(rng), **kw)
                if streamed:
                    for _ in got:
                        pass

        t0 = time.monotonic()
        with ThreadPoolExecutor(a.workers) as ex:
            list(ex.map(worker, range(a.workers)))
        took = time.monotonic() - t0
        served = up.of(a.api, model)
        refused = sum(1 for s in served if s.status == 429)
        ok = len(served) - refused
        print(
            f"{a.api} rate={a.rate:g}/s streamed={streamed} answered_at={not a.without_answered_at}: "
            f"{refused} of {len(served)} refused, {ok} ok in {took:.1f}s, "
            f"utilisation {ok / (a.rate * took + a.rate):.2f}"
        )
        for d in pd.get_quota(name).dimensions:
            print(f"  learned {d.dimension}: {d.limit} per {d.period:.3f}s ({d.reason})")
    finally:
        up.close()
        stop_server(server)


if __name__ == "__main__":
    main()
