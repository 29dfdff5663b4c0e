"""Manages usage-api's usage triggers through the official `twilio` Python SDK, unchanged.

The SDK is pointed at the server by a TwilioHttpClient that rewrites its base URL and sends a
bearer token instead of Basic auth (as records_sdk.py does); everything else is the SDK's own:
the form parameters it sends, the paging it follows, the types it parses. Prints what it saw as
JSON on stdout.

Environment: USAGE_API_BASE (http://127.0.0.1:PORT), USAGE_API_TOKEN (with the triggers scope),
USAGE_API_SID (the AccountSid the triggers watch).
"""

import json
import os

from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from bearer import BearerClient

SID = os.environ["USAGE_API_SID"]


def dump(t):
    return {
        "sid": t.sid,
        "account_sid": t.account_sid,
        "api_version": t.api_version,
        "callback_method": t.callback_method,
        "callback_url": t.callback_url,
        "current_value": t.current_value,
        "date_created": t.date_created.isoformat(),
        "date_fired": t.date_fired and t.date_fired.isoformat(),
        "friendly_name": t.friendly_name,
        "recurring": t.recurring,
        "trigger_by": t.trigger_by,
        "trigger_value": t.trigger_value,
        "uri": t.uri,
        "usage_category": t.usage_category,
        "usage_record_uri": t.usage_record_uri,
    }


def main():
    client = Client(account_sid=SID, environment={}, http_client=BearerClient())
    triggers = client.usage.triggers
    created = triggers.create(
        callback_url="http://127.0.0.1:9/sdk",
        trigger_value="1000",
        usage_category="calls",
        recurring="monthly",
        friendly_name="from the sdk",
    )
    out = {"created": dump(created)}
    out["listed"] = [t.sid for t in triggers.list()]
    out["filtered"] = [t.sid for t in triggers.list(recurring="daily")]
    out["fetched"] = dump(triggers(created.sid).fetch())
    out["updated"] = dump(
        triggers(created.sid).update(friendly_name="renamed", callback_method="GET")
    )
    for n in range(4):
        triggers.create(callback_url="http://127.0.0.1:9/more", trigger_value=str(n),
                        usage_category="sms", trigger_by="count")
    out["paged"] = [t.sid for t in triggers.list(page_size=2)]
    out["deleted"] = triggers(created.sid).delete()
    try:
        triggers(created.sid).fetch()
        out["after_delete"] = 200
    except TwilioRestException as e:
        out["after_delete"] = e.status
    print(json.dumps(out))


if __name__ == "__main__":
    main()
