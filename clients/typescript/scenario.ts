// The generated-client scenario of clients/run.sh, in TypeScript: openapi-fetch typed by the
// `paths` that openapi-typescript generated from openapi.yaml (run.sh makes generated/api.d.ts).
import assert from "node:assert/strict";
import createClient from "openapi-fetch";
import type { components, operations, paths } from "./generated/api.js";

type UsageRecord = components["schemas"]["UsageRecord"];
type ApiError = components["schemas"]["Error"];
type ListQuery = NonNullable<operations["listMonthlyUsage"]["parameters"]["query"]>;

function env(name: string): string {
    const value = process.env[name];
    assert.ok(value, `${name} is not set (run clients/run.sh)`);
    return value;
}

// Typed by the JSON bodies: pages and records come as HAL+JSON, errors as JSON (the list also
// answers text/csv and application/x-ndjson, which this scenario never asks for).
const client = createClient<paths, "application/hal+json" | "application/json">({
    baseUrl: env("USAGE_API_URL"),
    headers: { Authorization: `Bearer ${env("USAGE_API_TOKEN")}` },
});
const filter = env("USAGE_API_FILTER");
const perPage = Number(env("USAGE_API_PER_PAGE"));

// A `next` link's query back as the typed client's parameters. An unknown parameter fails, so
// that nothing a link carries is dropped on the way.
function queryOf(href: string): ListQuery {
    const url = new URL(href);
    assert.match(url.pathname, /\/express\/usage\/month$/, href);
    const query: ListQuery = {};
    for (const [key, value] of url.searchParams) {
        switch (key) {
            case "page": case "per_page":
                assert.match(value, /^[0-9]+$/, href);
                query[key] = Number(value);
                break;
            case "filter": case "cursor": case "order_by":
                query[key] = value;
                break;
            case "decimal_strings":
                assert.ok(value === "true" || value === "false", href);
                query.decimal_strings = value === "true";
                break;
            default:
                assert.fail(`unknown parameter ${key} in ${href}`);
        }
    }
    return query;
}

// Decimal strings summed exactly: scaled to a common number of fractional digits as BigInts.
const DECIMAL = /^(-?)([0-9]+)(?:\.([0-9]+))?$/;
function sumDecimals(values: string[]): string {
    const parsed = values.map((v) => {
        const m = DECIMAL.exec(v);
        assert.ok(m, `not a decimal string: ${v}`);
        return { negative: m[1] === "-", int: m[2] ?? "0", frac: m[3] ?? "" };
    });
    const scale = Math.max(0, ...parsed.map((p) => p.frac.length));
    let sum = 0n;
    for (const p of parsed) {
        const scaled = BigInt(p.int + p.frac.padEnd(scale, "0"));
        sum += p.negative ? -scaled : scaled;
    }
    // Back to a decimal with no trailing zeros (nor a trailing dot), as PostgreSQL's trim_scale.
    const digits = (sum < 0n ? -sum : sum).toString().padStart(scale + 1, "0");
    const int = digits.slice(0, digits.length - scale);
    const frac = digits.slice(digits.length - scale).replace(/0+$/, "");
    return (sum < 0n ? "-" : "") + int + (frac ? `.${frac}` : "");
}

// 1. The first page.
const first = await client.GET("/express/usage/month", {
    params: { query: { filter, per_page: perPage, decimal_strings: true } },
});
assert.equal(first.response.status, 200);
assert.ok(first.data, "no first page");
const total = first.data.total;
console.log(`list: page 1 of ${first.data.total_pages}, ${first.data.count} records, total ${total}`);

// 2. `next` to the end, through the typed client.
const records: UsageRecord[] = [];
let page = first.data;
let pages = 1;
for (;;) {
    assert.equal(page.count, page._embedded.usage.length);
    assert.equal(page.page, pages);
    records.push(...page._embedded.usage);
    const next = page._links.next;
    if (!next) break;
    assert.ok(pages < 1000, "more than 1000 pages: `next` never ends");
    const { data, response } = await client.GET("/express/usage/month", {
        params: { query: queryOf(next.href) },
    });
    assert.equal(response.status, 200, next.href);
    assert.ok(data, next.href);
    page = data;
    pages += 1;
}
assert.equal(pages, first.data.total_pages);
console.log(`walk: ${pages} pages, ${records.length} records`);

// 3. The figures against the oracle's.
const ids = new Set(records.map((r) => r.id));
assert.equal(records.length, Number(env("USAGE_API_EXPECT_RECORDS")));
assert.equal(records.length, total);
assert.equal(ids.size, records.length, "a record id appears twice");
const amounts = records.map((r) => {
    assert.equal(typeof r.total_amount_decimal, "string", `${r.id}: no total_amount_decimal`);
    return r.total_amount_decimal ?? "";
});
const sum = sumDecimals(amounts);
assert.equal(sum, env("USAGE_API_EXPECT_TOTAL"), "Σ total_amount_decimal");
console.log(`figures: ${records.length} records, ${ids.size} distinct ids, Σ total_amount ${sum}, as expected`);

// 4. One listed record through the templated `show` link.
const show = first.data._links.show;
assert.equal(show.templated, true);
assert.match(show.href, /\/express\/usage\/month\/\{id\}$/);
const listed = records[Math.floor(records.length / 2)];
assert.ok(listed);
const one = await client.GET("/express/usage/month/{id}", {
    params: { path: { id: listed.id }, query: { decimal_strings: true } },
});
assert.equal(one.response.status, 200);
assert.ok(one.data, `no record ${listed.id}`);
assert.equal(one.data.id, listed.id);
assert.equal(one.data.total_amount_decimal, listed.total_amount_decimal);
assert.equal(one.data.number_of_units_decimal, listed.number_of_units_decimal);
assert.equal(one.data.price_decimal, listed.price_decimal);
assert.deepEqual(one.data, listed); // the whole record, links included
console.log(`show: ${listed.id} equal to the listed record (total_amount ${listed.total_amount_decimal})`);

// 5 and 6. Errors come back as the generated Error type, with their codes.
async function listError(filter: string, status: number, code: ApiError["code"]): Promise<ApiError> {
    const { data, error, response } = await client.GET("/express/usage/month", {
        params: { query: { filter } },
    });
    assert.equal(response.status, status, filter);
    assert.equal(data, undefined);
    assert.ok(error, `no error body for ${filter}`);
    assert.equal(error.code, code);
    return error;
}
const invalid = await listError("month eq", 400, "invalid_filter");
console.log(`400: ${invalid.code}: ${invalid.fields.map((f) => `${f.name}: ${f.description}`).join("; ")}`);
const foreign = env("USAGE_API_FOREIGN_ACCOUNT");
const forbidden = await listError(`account_id eq '${foreign}'`, 403, "forbidden_accounts");
assert.deepEqual(forbidden.fields, [{ name: "account_id", description: foreign }]);
console.log(`403: ${forbidden.code}: ${forbidden.fields.map((f) => `${f.name}: ${f.description}`).join("; ")}`);
