"""The generated Python client's scenario (see clients/run.sh for what each step proves)."""

import os
from decimal import Decimal
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from usage_api_client import AuthenticatedClient
from usage_api_client.api.usage import get_monthly_usage, list_monthly_usage
from usage_api_client.models import Error, UsagePage, UsageRecord
from usage_api_client.types import UNSET

env = os.environ
client = AuthenticatedClient(base_url=env["USAGE_API_URL"], token=env["USAGE_API_TOKEN"])
FILTER = env["USAGE_API_FILTER"]
MAX_PAGES = 1000


def page_of(**query) -> UsagePage:
    answer = list_monthly_usage.sync_detailed(client=client, **query)
    assert answer.status_code == HTTPStatus.OK, (answer.status_code, answer.content)
    assert isinstance(answer.parsed, UsagePage), answer.parsed
    return answer.parsed


def query_of(href: str) -> dict:
    """A `next` link's query as the generated function's arguments."""
    q = {k: v[0] for k, v in parse_qs(urlsplit(href).query, strict_parsing=True).items()}
    args = {"page": int(q.pop("page")), "per_page": int(q.pop("per_page"))}
    args["decimal_strings"] = q.pop("decimal_strings") == "true"
    for name, arg in (("filter", "filter_"), ("order_by", "order_by"), ("cursor", "cursor")):
        if name in q:
            args[arg] = q.pop(name)
    assert not q, f"unexpected parameters in a next link: {q}"
    return args


# 1-2. A filtered list, walked along `next` to the end.
page = page_of(filter_=FILTER, per_page=int(env["USAGE_API_PER_PAGE"]), decimal_strings=True)
total = page.total
records: list[UsageRecord] = list(page.field_embedded.usage)
pages = 1
while page.field_links.next_ is not UNSET:
    assert pages < MAX_PAGES, "too many pages"
    page = page_of(**query_of(page.field_links.next_.href))
    assert page.total == total, "the total changed while walking"
    records.extend(page.field_embedded.usage)
    pages += 1
print(f"walked {pages} pages: {len(records)} records")

# The totals, exactly: decimal strings summed as Decimals (the float fields are not used).
assert len(records) == int(env["USAGE_API_EXPECT_RECORDS"]) == total, (len(records), total)
assert len({r.id for r in records}) == len(records), "a record appeared twice"
amounts = [r.total_amount_decimal for r in records]
assert all(isinstance(a, str) for a in amounts), "decimal_strings=true gave no strings"
exact = sum((Decimal(a) for a in amounts), Decimal(0))
assert exact == Decimal(env["USAGE_API_EXPECT_TOTAL"]), (exact, env["USAGE_API_EXPECT_TOTAL"])
print(f"Σ total_amount_decimal = {exact} (the oracle's {env['USAGE_API_EXPECT_TOTAL']})")

# 3. One record through the templated `show` link's operation.
listed = records[len(records) // 2]
assert page.field_links.show.templated is True
one = get_monthly_usage.sync_detailed(client=client, id=listed.id, decimal_strings=True)
assert one.status_code == HTTPStatus.OK and isinstance(one.parsed, UsageRecord), one.content
for field in ("id", "account_id", "month", "price_decimal", "number_of_units_decimal",
              "total_amount_decimal"):
    assert getattr(one.parsed, field) == getattr(listed, field), field
print(f"show {listed.id}: equal to the listed record")

# 4. A 400 and a 403, parsed into the generated Error model.
bad = list_monthly_usage.sync_detailed(client=client, filter_="month eq")
assert bad.status_code == HTTPStatus.BAD_REQUEST and isinstance(bad.parsed, Error), bad.content
assert bad.parsed.code.value == "invalid_filter", bad.parsed
assert [f.name for f in bad.parsed.fields] == ["filter"], bad.parsed.fields
foreign = f"account_id eq '{env['USAGE_API_FOREIGN_ACCOUNT']}'"
denied = list_monthly_usage.sync_detailed(client=client, filter_=foreign)
assert denied.status_code == HTTPStatus.FORBIDDEN and isinstance(denied.parsed, Error), denied
assert denied.parsed.code.value == "forbidden_accounts", denied.parsed
print(f"400 {bad.parsed.code.value}, 403 {denied.parsed.code.value}: parsed as Error")
print("python: ok")
