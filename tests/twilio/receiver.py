"""A webhook receiver on loopback that verifies every delivery with the `standardwebhooks` library.

Usage: receiver.py DIR. Prints its port on the first line of stdout, then serves until killed.

- DIR/secrets.json: {"/path": "whsec_..."}: the secret of the trigger whose callback is that path
  (re-read on every request, so the test can add triggers as it creates them).
- DIR/plan.json (optional): {"/path": [500, 302, "slow"]}: how to answer the path's first
  requests (then 200): a status (a 3xx points its Location at /elsewhere), or "slow": 200 after
  3 seconds.
- DIR/log.jsonl: one line per request: method, path, the form fields (body or query), the
  webhook-id, whether the signature verified (and why not), and the status answered.
"""

import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

DIR = sys.argv[1]
LOCK = threading.Lock()
SEEN = {}


def read_json(name):
    try:
        with open(os.path.join(DIR, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


class Handler(BaseHTTPRequestHandler):
    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        secret = read_json("secrets.json").get(url.path)
        verified, error = False, None
        if secret is None:
            error = "no secret for " + url.path
        else:
            try:
                Webhook(secret).verify(body, headers, json_parse=False)
                verified = True
            except Exception as e:  # the test reads the reason
                error = "%s: %s" % (type(e).__name__, e)
        form = body.decode() if self.command == "POST" else url.query
        with LOCK:
            n = SEEN.get(url.path, 0)
            SEEN[url.path] = n + 1
            plan = read_json("plan.json").get(url.path, [])
            status = plan[n] if n < len(plan) else 200
            line = {
                "method": self.command,
                "path": url.path,
                "query": url.query,
                "content_type": self.headers.get("Content-Type"),
                "fields": dict(urllib.parse.parse_qsl(form, keep_blank_values=True)),
                "webhook_id": self.headers.get("webhook-id"),
                "webhook_timestamp": self.headers.get("webhook-timestamp"),
                "verified": verified,
                "error": error,
                "status": status,
            }
            with open(os.path.join(DIR, "log.jsonl"), "a") as log:
                log.write(json.dumps(line) + "\n")
        if status == "slow":
            time.sleep(3)
            status = 200
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = handle_any
    do_POST = handle_any

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
