"""Drives usage-api's usage records through the official `twilio` Python SDK, unchanged.

The SDK is pointed at the server by a TwilioHttpClient that rewrites its base URL and sends a
bearer token instead of Basic auth; everything else (URIs, parameters, paging, parsing) is the
SDK's own. Prints every record of every subresource as JSON on stdout.

Environment: USAGE_API_BASE (http://127.0.0.1:PORT), USAGE_API_TOKEN, USAGE_API_SID,
USAGE_API_START and USAGE_API_END (YYYY-MM-DD) for the ranged subresources.
"""

import datetime
import json
import os

from twilio.rest import Client

from bearer import BearerClient

SID = os.environ["USAGE_API_SID"]
START = datetime.date.fromisoformat(os.environ["USAGE_API_START"])
END = datetime.date.fromisoformat(os.environ["USAGE_API_END"])


def dump(record):
    return {
        "category": record.category,
        "start_date": record.start_date.isoformat(),
        "end_date": record.end_date.isoformat(),
        "count": record.count,
        "usage": record.usage,
        # The SDK parses price as a Decimal: exact, whatever its digits.
        "price": None if record.price is None else "{:f}".format(record.price),
        "price_unit": record.price_unit,
        "usage_unit": record.usage_unit,
        "count_unit": record.count_unit,
        "account_sid": record.account_sid,
        "api_version": record.api_version,
        "uri": record.uri,
    }


def main():
    http = BearerClient()
    client = Client(account_sid=SID, environment={}, http_client=http)
    records = client.usage.records
    out = {"root": [dump(r) for r in records.list(start_date=START, end_date=END, page_size=7)]}
    for name in ["daily", "monthly", "yearly", "all_time"]:
        resource = getattr(records, name)
        out[name] = [dump(r) for r in resource.list(start_date=START, end_date=END, page_size=9)]
    for name in ["today", "yesterday", "this_month", "last_month"]:
        out[name] = [dump(r) for r in getattr(records, name).list(page_size=3)]
    out["calls_monthly"] = [
        dump(r) for r in records.monthly.list(category="calls", start_date=START, end_date=END)
    ]
    out["requests"] = http.requests
    print(json.dumps(out))


if __name__ == "__main__":
    main()
