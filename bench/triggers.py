"""The usage-triggers benchmark's driver and receiver (bench/triggers.sh runs it; stdlib only).

    triggers.py BASE_URL TOKENS OUT.json

TOKENS: one "organization token" per line (tokens with the write and triggers scopes); each
organization has the accounts "<organization>-a0" … "<organization>-a4". The script:

1. starts a webhook receiver on loopback that notes when each delivery arrives;
2. creates 10 triggers per organization through the API (5 organization-wide, 5 on one account;
   daily, monthly, yearly, all-time and once-ever; by count, usage and price; parent and child
   categories; every threshold below what the burst brings);
3. sends the burst: one POST /express/usage/events per organization (2 events per account),
   8 at a time, noting when each answer (the ingest's commit) came back;
4. waits for every trigger's delivery (at most 120 s) and writes, per delivery, the time from
   its organization's commit to its arrival: p50, p99, max, and how many arrived.
"""

import json
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BASE, TOKENS, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
ARRIVALS = []
LOCK = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        arrived = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fields = dict(urllib.parse.parse_qsl(body.decode()))
        with LOCK:
            ARRIVALS.append((arrived, self.headers.get("webhook-id"), fields.get("AccountSid")))
        self.send_response(204)
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args):
        pass


def request(method, path, token, body=None, content_type=None):
    headers = {"Authorization": "Bearer " + token}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(BASE + path, data=body, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=60) as response:
        return response.status, response.read()


# (scope: None = the organization, else the account index), category, recurring, by, value
PLAN = [
    (None, "calls", "daily", "count", "1"),
    (None, "sms", "monthly", "usage", "0.5"),
    (None, "totalprice", "yearly", "price", "0.01"),
    (None, "calls-inbound", "alltime", "count", "2"),
    (None, "sms-outbound", None, "price", "0.001"),
    (0, "calls", "monthly", "usage", "1"),
    (1, "sms", "daily", "count", "1"),
    (2, "calls-inbound", "yearly", "price", "0.01"),
    (3, "totalprice", None, "usage", "0.01"),
    (4, "sms-outbound", "alltime", "count", "1"),
]


def create_triggers(org, token, callback):
    made = 0
    for scope, category, recurring, by, value in PLAN:
        sid = org if scope is None else "%s-a%d" % (org, scope)
        form = {"CallbackUrl": callback, "UsageCategory": category, "TriggerBy": by,
                "TriggerValue": value}
        if recurring:
            form["Recurring"] = recurring
        status, _ = request("POST", "/2010-04-01/Accounts/%s/Usage/Triggers.json" % sid, token,
                            urllib.parse.urlencode(form).encode(),
                            "application/x-www-form-urlencoded")
        assert status == 201, status
        made += 1
    return made


def burst(org, token):
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 2))
    events = []
    for a in range(5):
        for n, (kind, direction, unit) in enumerate([("CALL", "INBOUND", "MINUTES"),
                                                      ("MESSAGE", "OUTBOUND", "SEGMENTS")]):
            events.append({
                "event_id": "burst-%s-%d-%d" % (org, a, n), "account_id": "%s-a%d" % (org, a),
                "product_id": "P", "aggr_product_id": "AP", "type": kind, "unit": unit,
                "direction": direction, "resolution": None, "description": "bench",
                "wallet_name": "w", "occurred_at": now, "quantity": "3", "unit_price": "0.25",
                "currency": "USD",
            })
    status, _ = request("POST", "/express/usage/events", token, json.dumps(events).encode(),
                        "application/json")
    assert status in (200, 202), status
    return org, time.time()


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    callback = "http://127.0.0.1:%d/hook" % server.server_address[1]
    tokens = [line.split() for line in open(TOKENS) if line.strip()]
    with ThreadPoolExecutor(8) as pool:
        made = sum(pool.map(lambda t: create_triggers(t[0], t[1], callback), tokens))
    time.sleep(2)
    assert not ARRIVALS, "deliveries before any usage: %d" % len(ARRIVALS)
    started = time.time()
    with ThreadPoolExecutor(8) as pool:
        committed = dict(pool.map(lambda t: burst(t[0], t[1]), tokens))
    burst_seconds = time.time() - started
    deadline = time.time() + 120
    while len(ARRIVALS) < made and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1)  # nothing may arrive twice
    with LOCK:
        arrivals = list(ARRIVALS)
    lags = []
    for arrived, _, account_sid in arrivals:
        org = account_sid.rsplit("-a", 1)[0] if account_sid not in committed else account_sid
        lags.append(arrived - committed[org])
    ids = [a[1] for a in arrivals]
    result = {
        "triggers": made,
        "organizations": len(tokens),
        "delivered": len(arrivals),
        "distinct_ids": len(set(ids)),
        "burst_seconds": round(burst_seconds, 3),
        "p50_seconds": round(percentile(lags, 50), 3) if lags else None,
        "p99_seconds": round(percentile(lags, 99), 3) if lags else None,
        "max_seconds": round(max(lags), 3) if lags else None,
    }
    json.dump(result, open(OUT, "w"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
