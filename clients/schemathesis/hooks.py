"""schemathesis hooks for usage-api (loaded by run.sh through SCHEMATHESIS_HOOKS).

The list routes also answer whole exports, `text/csv` and `application/x-ndjson`, which
openapi.yaml types as plain strings. Deserialized as the text they are, they validate against
that schema, and the stateful phase finds no record id in them, so it does not follow the
`show` link from an export (a link's target is read from a JSON page only).
"""

import schemathesis


@schemathesis.deserializer("text/csv", "application/x-ndjson")
def as_text(ctx: schemathesis.DeserializationContext, response) -> str:
    return response.content.decode(response.encoding or "utf-8")
