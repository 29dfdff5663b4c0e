"""A faulty HTTP proxy on loopback in front of usage-api, for the pull tests.

    proxy.py UPSTREAM STATE_DIR

Forwards every GET to UPSTREAM (path, query and Authorization kept) and answers as the upstream
did, except as STATE_DIR/mode.json says (re-read on each request):

- {"every": 3}: every third request answers 503 with Retry-After: 1;
- {"fail_after": N}: requests after the N-th answer 500 (a fault the pull does not retry);
- {"delay_ms": D}: each request waits D ms first.

Prints its port on the first line; appends each request's path to STATE_DIR/requests.log.
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM, DIR = sys.argv[1], sys.argv[2]
LOCK = threading.Lock()
COUNT = [0]


def mode():
    try:
        with open(os.path.join(DIR, "mode.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


class Proxy(BaseHTTPRequestHandler):
    def do_GET(self):
        with LOCK:
            COUNT[0] += 1
            n = COUNT[0]
            with open(os.path.join(DIR, "requests.log"), "a") as log:
                log.write(self.path + "\n")
        m = mode()
        time.sleep(m.get("delay_ms", 0) / 1000)
        if m.get("every") and n % m["every"] == 0:
            return self.answer(503, {"Retry-After": "1"}, b'{"code":"service_unavailable"}')
        if m.get("fail_after") is not None and n > m["fail_after"]:
            return self.answer(500, {}, b'{"code":"internal_error"}')
        req = urllib.request.Request(UPSTREAM + self.path)
        for name in ("Authorization", "Accept"):
            if self.headers.get(name):
                req.add_header(name, self.headers[name])
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                self.answer(r.status, {"Content-Type": r.headers.get("Content-Type", "")}, r.read())
        except urllib.error.HTTPError as e:
            headers = {k: v for k, v in e.headers.items() if k in ("Content-Type", "Retry-After", "WWW-Authenticate")}
            self.answer(e.code, headers, e.read())

    def answer(self, status, headers, body):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
print(server.server_address[1], flush=True)
server.serve_forever()
