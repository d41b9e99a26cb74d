"""Cached predictions: a slow, rate-limited model endpoint is called once per distinct
input; every repeat, in this process or any other worker's, is answered from permitd's
cache until the TTL ends. Run with a permitd on $PERMITD_TARGET:

    python cached_predictions.py
"""

import os
import time
import uuid

import requests

import permitd
from fake_upstream import upstream_url
from permitd import Limit

RESOURCE = "example:model-server"
NAMESPACE = os.environ.get("NAMESPACE") or f"predictions-{uuid.uuid4().hex[:8]}"

pd = permitd.Client()
URL = upstream_url()


@pd.cached(NAMESPACE, ttl=300)
def predict(text: str, model: str = "sentiment-v1") -> dict:
    with pd.permit(RESOURCE, max_wait=10) as p:
        r = requests.post(f"{URL}/v1/predict", json={"text": text, "model": model}, timeout=10)
        p.report(r)
    r.raise_for_status()
    return r.json()


def main() -> None:
    pd.put_resource(RESOURCE, limits=[Limit("requests", 10, 1)], concurrency=2)
    texts = ["great product", "awful support", "great product", "meh", "awful support", "great product"]
    t0 = time.monotonic()
    labels = [predict(t)["label"] for t in texts]
    print(list(zip(texts, labels)))
    calls = requests.get(f"{URL}/stats", timeout=10).json().get("predict", 0)
    print(f"RESULT cached_predictions inputs={len(texts)} distinct={len(set(texts))} "
          f"model_calls={calls} seconds={time.monotonic() - t0:.2f}")
    assert calls == len(set(texts))
    pd.close()


if __name__ == "__main__":
    main()
