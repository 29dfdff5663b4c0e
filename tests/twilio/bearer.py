"""The official SDK's own HTTP client, sent to usage-api with a bearer token.

Both SDK scripts point the `twilio` package at the server this way: the base URL rewritten,
`Authorization: Bearer` instead of Basic auth; everything else (URIs, parameters, paging,
parsing) is the SDK's own.
"""

import os

from twilio.http.http_client import TwilioHttpClient

BASE = os.environ["USAGE_API_BASE"]
TOKEN = os.environ["USAGE_API_TOKEN"]


class BearerClient(TwilioHttpClient):
    def request(self, method, url, params=None, data=None, headers=None, auth=None,
                timeout=None, allow_redirects=False):
        assert url.startswith("https://api.twilio.com/"), url
        url = BASE + url[len("https://api.twilio.com"):]
        headers = dict(headers or {})
        headers["Authorization"] = "Bearer " + TOKEN
        response = super().request(method, url, params, data, headers, None, timeout,
                                   allow_redirects)
        self.requests = getattr(self, "requests", 0) + 1
        return response
