-- A full rebuild's organization-wide totals, one statement per table (see FULL_TOTALS in
-- mod.rs): {table} (usage_daily_totals per day, then usage_monthly_totals per month) becomes
-- the sum of {source} (usage_daily, then the days just made right) per (organization,
-- {period}, category, currency, unit), written only where it differs, and rows with no such
-- sum removed (among them the zero rows incremental runs leave behind).
WITH fresh AS (
    SELECT organization_id, {period_of} AS {period}, category, currency, unit,
           sum(event_count)             AS event_count,
           trim_scale(sum(quantity))    AS quantity,
           trim_scale(sum(amount))      AS amount
    FROM {source}
    GROUP BY organization_id, {period_of}, category, currency, unit
),
upserted AS (
    INSERT INTO {table} AS t (
        organization_id, {period}, category, currency, unit, event_count, quantity, amount)
    SELECT organization_id, {period}, category, currency, unit, event_count, quantity, amount
    FROM fresh
    ORDER BY organization_id, {period}, category, currency, unit
    ON CONFLICT (organization_id, {period}, category, currency, unit) DO UPDATE SET
        event_count = EXCLUDED.event_count,
        quantity    = EXCLUDED.quantity,
        amount      = EXCLUDED.amount
    WHERE (t.event_count, t.quantity, t.amount)
          IS DISTINCT FROM (EXCLUDED.event_count, EXCLUDED.quantity, EXCLUDED.amount)
    RETURNING 1
)
DELETE FROM {table} t
WHERE NOT EXISTS (SELECT 1 FROM fresh f
                  WHERE f.organization_id = t.organization_id AND f.{period} = t.{period}
                    AND f.category = t.category AND f.currency = t.currency
                    AND f.unit = t.unit)
