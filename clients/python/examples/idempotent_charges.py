"""A requests-based script that charges customers: a side effect that must happen once,
however often the script is re-run (a crash half-way, an Airflow retry, two workers).

Each charge runs under an idempotency key. The first run makes the POSTs and stores each
answer in permitd; a re-run finds the keys completed and replays the stored answers
without calling the API again. The charges API is rate limited too, so each POST also
takes a permit. Run with a permitd on $PERMITD_TARGET:

    python idempotent_charges.py
"""

import os
import uuid

import requests

import permitd
from fake_upstream import upstream_url
from permitd import Limit

RESOURCE = "example:payments"
BATCH = os.environ.get("BATCH") or uuid.uuid4().hex[:8]  # one batch of orders
ORDERS = [{"order": f"{BATCH}-{n}", "customer": f"cus_{n}", "amount": 1000 + n} for n in range(5)]


def charge(pd: permitd.Client, url: str, order: dict) -> permitd.StoredResult:
    key = f"charge:{order['order']}"
    with pd.idempotent(key, fingerprint=order) as op:
        if op.replayed:
            return op.result
        with pd.permit(RESOURCE, max_wait=10) as p:
            r = requests.post(f"{url}/v1/charges", json=order, headers={"Idempotency-Key": key}, timeout=10)
            p.report(r)
        r.raise_for_status()  # an error abandons the key, so a later run retries it
        return op.complete(r)


def main() -> None:
    url = upstream_url()
    with permitd.Client() as pd:
        pd.put_resource(RESOURCE, limits=[Limit("requests", 25, 1)])
        for run in ("first run", "re-run"):
            results = [charge(pd, url, o) for o in ORDERS]
            print(run, [r.json()["id"] for r in results])
        try:  # the same key for a different request is caught, not replayed
            charge(pd, url, {**ORDERS[0], "amount": 1})
        except permitd.IdempotencyConflict as e:
            print("refused:", e)
    charges = requests.get(f"{url}/stats", timeout=10).json().get("charges", 0)
    print(f"RESULT idempotent_charges orders={len(ORDERS)} runs=2 upstream_charges={charges}")
    assert charges == len(ORDERS)


if __name__ == "__main__":
    main()
