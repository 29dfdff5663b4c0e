-- A full rebuild's organization-wide days (usage_daily_totals): the sum of usage_daily per
-- (organization, day, category, currency, unit), written only where it differs, and rows with
-- no such days removed (among them the zero rows incremental runs leave behind).
WITH fresh AS (
    SELECT organization_id, day, category, currency, unit,
           sum(event_count)             AS event_count,
           trim_scale(sum(quantity))    AS quantity,
           trim_scale(sum(amount))      AS amount
    FROM usage_daily
    GROUP BY organization_id, day, category, currency, unit
),
upserted AS (
    INSERT INTO usage_daily_totals AS t (
        organization_id, day, category, currency, unit, event_count, quantity, amount)
    SELECT organization_id, day, category, currency, unit, event_count, quantity, amount
    FROM fresh
    ORDER BY organization_id, day, category, currency, unit
    ON CONFLICT (organization_id, day, category, currency, unit) DO UPDATE SET
        event_count = EXCLUDED.event_count,
        quantity    = EXCLUDED.quantity,
        amount      = EXCLUDED.amount
    WHERE (t.event_count, t.quantity, t.amount)
          IS DISTINCT FROM (EXCLUDED.event_count, EXCLUDED.quantity, EXCLUDED.amount)
    RETURNING 1
)
DELETE FROM usage_daily_totals t
WHERE NOT EXISTS (SELECT 1 FROM fresh f
                  WHERE f.organization_id = t.organization_id AND f.day = t.day
                    AND f.category = t.category AND f.currency = t.currency
                    AND f.unit = t.unit)
;
-- And their months (usage_monthly_totals), the same way, from the days just made right.
WITH fresh AS (
    SELECT organization_id, date_trunc('month', day)::date AS month, category, currency, unit,
           sum(event_count)             AS event_count,
           trim_scale(sum(quantity))    AS quantity,
           trim_scale(sum(amount))      AS amount
    FROM usage_daily_totals
    GROUP BY organization_id, date_trunc('month', day)::date, category, currency, unit
),
upserted AS (
    INSERT INTO usage_monthly_totals AS t (
        organization_id, month, category, currency, unit, event_count, quantity, amount)
    SELECT organization_id, month, category, currency, unit, event_count, quantity, amount
    FROM fresh
    ORDER BY organization_id, month, category, currency, unit
    ON CONFLICT (organization_id, month, category, currency, unit) DO UPDATE SET
        event_count = EXCLUDED.event_count,
        quantity    = EXCLUDED.quantity,
        amount      = EXCLUDED.amount
    WHERE (t.event_count, t.quantity, t.amount)
          IS DISTINCT FROM (EXCLUDED.event_count, EXCLUDED.quantity, EXCLUDED.amount)
    RETURNING 1
)
DELETE FROM usage_monthly_totals t
WHERE NOT EXISTS (SELECT 1 FROM fresh f
                  WHERE f.organization_id = t.organization_id AND f.month = t.month
                    AND f.category = t.category AND f.currency = t.currency
                    AND f.unit = t.unit)
