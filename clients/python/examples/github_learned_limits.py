"""A GitHub-style API whose real limit permitd learns from the response headers.

The resource is configured with a generous guess (1 000 requests per 2 s window); the API
really allows 12 per window and says so in x-ratelimit-limit / remaining / reset. After
the first answer permitd enforces the learned limit, corrects its count from `remaining`,
and if the API still answers 403 with remaining 0, pauses every worker until the reset;
`client.call` retries exactly when permitd says. Run with a permitd on $PERMITD_TARGET:

    python github_learned_limits.py
"""

import time
from concurrent.futures import ThreadPoolExecutor

import requests

import permitd
from fake_upstream import upstream_url
from permitd import Backoff, Limit

RESOURCE = "example:github-rest"
REPOS = [f"octo-org/repo-{n}" for n in range(30)]


def main() -> None:
    url = upstream_url()
    with permitd.Client() as pd, requests.Session() as http:
        pd.put_resource(RESOURCE, limits=[Limit("requests", 1000, 2)], backoff=Backoff(max_attempts=5))

        def fetch(repo: str) -> dict:
            r = pd.call(RESOURCE, http.get, f"{url}/repos/{repo}", timeout=10, max_wait=30)
            r.raise_for_status()
            return r.json()

        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            stars = sum(repo["stargazers_count"] for repo in pool.map(fetch, REPOS))
        took = time.monotonic() - t0
        learned = [d for d in pd.get_quota(RESOURCE).dimensions if d.source == "LEARNED"]
    stats = http.get(f"{url}/stats", timeout=10).json()
    print(f"RESULT github_learned_limits repos={len(REPOS)} stars={stars} seconds={took:.1f} "
          f"upstream_calls={stats['github']} upstream_403={stats.get('github_403', 0)} "
          f"learned={[(d.limit, d.period) for d in learned]}")
    # 30 requests at 12 per 2 s window need at least two window changes.
    assert took >= 2.0 and stats["github"] - stats.get("github_403", 0) == len(REPOS)


if __name__ == "__main__":
    main()
