"""Producers for bench/rebuild.sh: THREADS threads POST batches of fresh events to
/express/usage/events until the file STOP exists (or MAX_SECONDS pass), each request timed.
Prints one JSON summary: requests, statuses, latency percentiles (ms), events accepted, and
the sum of the quantities accepted (exact, as a decimal string). Standard library only."""

import http.client
import json
import os
import sys
import threading
import time
import uuid
from decimal import Decimal

PORT = int(os.environ["PORT"])
TOKEN = os.environ["TOKEN"]
THREADS = int(os.environ.get("THREADS", "4"))
STOP = os.environ["STOP"]
MAX_SECONDS = float(os.environ.get("MAX_SECONDS", "600"))
ACCOUNTS = int(os.environ.get("ACCOUNTS", "2000"))
BATCH = 10

lock = threading.Lock()
latencies, statuses = [], {}
accepted = [0]
quantity = [Decimal(0)]


def produce(worker: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    started, n = time.monotonic(), 0
    while not os.path.exists(STOP) and time.monotonic() - started < MAX_SECONDS:
        events = [
            {
                "event_id": f"live-{worker}-{n}-{i}-{uuid.uuid4().hex[:8]}",
                "account_id": f"acc-{1 + (worker * 7919 + n * 31 + i) % ACCOUNTS}",
                "product_id": "P-live", "aggr_product_id": "AP-live", "type": "CALL",
                "unit": "MINUTES", "description": "live", "wallet_name": "main",
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "quantity": f"{(n * 7 + i) % 100}.{i:02d}", "unit_price": "0.014",
                "currency": "USD",
            }
            for i in range(BATCH)
        ]
        body = json.dumps(events)
        sent = time.monotonic()
        conn.request("POST", "/express/usage/events", body, {
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        answer = conn.getresponse()
        payload = answer.read()
        took = (time.monotonic() - sent) * 1000
        ok = 0
        total = Decimal(0)
        if answer.status == 200:
            for result, event in zip(json.loads(payload)["results"], events):
                if result["status"] == "accepted":
                    ok += 1
                    total += Decimal(event["quantity"])
        with lock:
            latencies.append(took)
            statuses[answer.status] = statuses.get(answer.status, 0) + 1
            accepted[0] += ok
            quantity[0] += total
        n += 1


threads = [threading.Thread(target=produce, args=(w,)) for w in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
latencies.sort()
pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)
json.dump({
    "requests": len(latencies), "statuses": statuses, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
    "max_ms": round(latencies[-1], 1), "over_1s": sum(1 for l in latencies if l >= 1000),
    "accepted": accepted[0], "quantity": str(quantity[0]),
}, sys.stdout)
print()
