-- Fires the triggers that have reached their threshold in their current UTC period, once per
-- period: the firing row's key is (trigger, period start), and it is the pending delivery too.
--
-- $1, $2, $3: the (organization, account, month) groups the rollup just recomputed, one element
-- each: a trigger is looked at when one of them is in its scope (its organization, or its
-- account) and in its current period. $4: every trigger (after a full rebuild). $5: this trigger
-- alone (just created), with $1 its organization.
--
-- The period that ended less than an hour ago is looked at too: usage that crossed a threshold
-- at 23:59:58 and was rolled up after midnight still fires that day's trigger (late, once).
WITH today AS (
    SELECT (now() AT TIME ZONE 'UTC')::date AS day,
           ((now() - interval '1 hour') AT TIME ZONE 'UTC')::date AS grace
),
candidates AS (
    SELECT t.organization_id, t.sid, t.account_id, t.usage_category, t.trigger_by,
           t.price_unit, t.trigger_value, p.period_start, p.first, p.last
    FROM today
    CROSS JOIN usage_triggers t
    CROSS JOIN LATERAL (
        SELECT * FROM usage_trigger_period(t.recurring, t.date_created, today.day)
        UNION
        SELECT * FROM usage_trigger_period(t.recurring, t.date_created, today.grace)) p
    WHERE ($4 OR t.organization_id = ANY($1::text[]))
      AND ($5::text IS NULL OR t.sid = $5)
      AND ($4 OR $5::text IS NOT NULL OR EXISTS (
              SELECT 1
              FROM unnest($1::text[], $2::text[], $3::date[]) AS g(organization_id, account_id, month)
              WHERE g.organization_id = t.organization_id
                AND (t.account_id IS NULL OR t.account_id = g.account_id)
                AND (p.first IS NULL OR g.month >= date_trunc('month', p.first))
                AND (p.last IS NULL OR g.month <= p.last)))
      -- Only periods the trigger existed in.
      AND (p.last IS NULL OR p.last >= (t.date_created AT TIME ZONE 'UTC')::date)
      AND NOT EXISTS (
              SELECT 1 FROM usage_trigger_firings f
              WHERE f.organization_id = t.organization_id AND f.trigger_sid = t.sid
                AND f.period_start = p.period_start)
),
valued AS (
    SELECT c.*, usage_trigger_value(c.organization_id, c.account_id, c.usage_category,
                                    c.trigger_by, c.price_unit, c.first, c.last) AS value
    FROM candidates c
),
fired AS (
    INSERT INTO usage_trigger_firings (organization_id, trigger_sid, period_start, fired_at,
                                       current_value, next_attempt_at)
    SELECT organization_id, sid, period_start, clock_timestamp(), value, clock_timestamp()
    FROM valued
    WHERE value >= trigger_value
    ORDER BY organization_id, sid
    ON CONFLICT DO NOTHING
    RETURNING organization_id, trigger_sid, fired_at
),
stamped AS (
    UPDATE usage_triggers t SET date_fired = f.fired_at
    FROM fired f
    WHERE t.organization_id = f.organization_id AND t.sid = f.trigger_sid
    RETURNING 1
)
SELECT count(*) AS fired FROM stamped
