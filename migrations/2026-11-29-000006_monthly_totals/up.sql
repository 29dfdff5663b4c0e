-- Organization-wide usage per month (issue 10): the sum of usage_daily_totals per (organization,
-- UTC month, category, currency, unit). A reseller's Monthly, Yearly or AllTime records read one
-- row per month and category, plus the days of the range's partial first and last months: the
-- cost follows months, not the days with usage (a reseller with thousands of accounts has usage
-- every day). The rollup keeps it equal by adding the same differences it adds to the days.
CREATE TABLE usage_monthly_totals (
    organization_id text    NOT NULL,
    month           date    NOT NULL CHECK (month = date_trunc('month', month)::date),
    category        text    NOT NULL,
    currency        text    NOT NULL,
    unit            text    NOT NULL,
    -- 0 once every event of the month is voided or moved away (as usage_daily_totals, for the
    -- same reason); reads skip such rows and a full rebuild drops them.
    event_count     bigint  NOT NULL,
    quantity        numeric NOT NULL,
    amount          numeric NOT NULL,
    PRIMARY KEY (organization_id, month, category, currency, unit)
);

INSERT INTO usage_monthly_totals (
    organization_id, month, category, currency, unit, event_count, quantity, amount)
SELECT organization_id, date_trunc('month', day)::date, category, currency, unit,
       sum(event_count), trim_scale(sum(quantity)), trim_scale(sum(amount))
FROM usage_daily_totals
WHERE event_count <> 0
GROUP BY organization_id, date_trunc('month', day)::date, category, currency, unit;
