-- Usage triggers (DESIGN §2d): a threshold on a scope's usage of a category in the current UTC
-- period, fired once per period into a durable outbox that every `serve` replica delivers from.

-- 1. The triggers. `account_sid` is the scope as the caller named it (the organization id, or
--    one of its account ids: then also `account_id`); every column Twilio's resource shows is
--    kept as created, except the callback and name, which an update may change.
CREATE TABLE usage_triggers (
    -- No reference to organizations: a caller may watch its organization before any of its
    -- accounts is imported (the organization's row comes with its first account).
    organization_id text        NOT NULL,
    sid             text        NOT NULL UNIQUE CHECK (sid ~ '^UT[0-9a-f]{32}$'),
    account_sid     text        NOT NULL,
    account_id      text,
    api_version     text        NOT NULL,
    friendly_name   text,
    callback_url    text        NOT NULL,
    callback_method text        NOT NULL CHECK (callback_method IN ('GET', 'POST')),
    -- NULL: fires once ever (as `alltime`).
    recurring       text        CHECK (recurring IN ('daily', 'monthly', 'yearly', 'alltime')),
    trigger_by      text        NOT NULL CHECK (trigger_by IN ('count', 'usage', 'price')),
    -- Lower-case ISO 4217: the currency a `price` trigger (or `usage` of totalprice) sums.
    price_unit      text        NOT NULL,
    usage_category  text        NOT NULL REFERENCES usage_categories (slug),
    trigger_value   numeric     NOT NULL CHECK (trigger_value >= 0),
    -- The 32 bytes the deliveries are signed with (shown once, as whsec_ + base64).
    secret          bytea       NOT NULL CHECK (length(secret) = 32),
    date_created    timestamptz NOT NULL,
    date_updated    timestamptz NOT NULL,
    date_fired      timestamptz,
    PRIMARY KEY (organization_id, sid)
);

-- 2. The firings, which are also the outbox: one row per (trigger, period), so a trigger fires
--    once per period whatever the number of replicas and retries, and its delivery is pending
--    from the transaction that fired it. A delivery is claimed by moving `next_attempt_at` past
--    the attempt's end (a lease), so a replica that dies mid-attempt leaves it due again.
CREATE TABLE usage_trigger_firings (
    organization_id text        NOT NULL,
    trigger_sid     text        NOT NULL,
    period_start    date        NOT NULL,
    fired_at        timestamptz NOT NULL,
    current_value   numeric     NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    finished_at     timestamptz,
    PRIMARY KEY (organization_id, trigger_sid, period_start),
    FOREIGN KEY (organization_id, trigger_sid)
        REFERENCES usage_triggers (organization_id, sid) ON DELETE CASCADE
);
CREATE INDEX usage_trigger_firings_due_idx ON usage_trigger_firings (next_attempt_at)
    WHERE state = 'pending';

-- 3. Every delivery attempt, as `GET /express/usage/triggers/{Sid}/deliveries` lists them.
CREATE TABLE usage_trigger_attempts (
    organization_id text        NOT NULL,
    trigger_sid     text        NOT NULL,
    period_start    date        NOT NULL,
    attempt         integer     NOT NULL CHECK (attempt > 0),
    started_at      timestamptz NOT NULL,
    duration_ms     integer     NOT NULL,
    -- delivered, http_error, timeout, connection_error, forbidden_address
    outcome         text        NOT NULL,
    response_status integer,
    PRIMARY KEY (organization_id, trigger_sid, period_start, attempt),
    FOREIGN KEY (organization_id, trigger_sid, period_start)
        REFERENCES usage_trigger_firings (organization_id, trigger_sid, period_start)
        ON DELETE CASCADE
);
CREATE INDEX usage_trigger_attempts_newest_idx
    ON usage_trigger_attempts (organization_id, trigger_sid, started_at DESC);

-- 4. A trigger's current period on `today` (UTC): its start (the key of its firing) and the
--    days it sums (`first`/`last` NULL: unbounded). Once-ever and `alltime` triggers have one
--    period, keyed by the day they were created, over all time.
--    Declared as a set (of one row) so that the planner inlines it into the statements that call
--    it once per trigger, instead of calling it as a function each time.
CREATE FUNCTION usage_trigger_period(recurring text, created timestamptz, today date)
RETURNS TABLE (period_start date, first date, last date)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE recurring
               WHEN 'daily' THEN today
               WHEN 'monthly' THEN date_trunc('month', today::timestamp)::date
               WHEN 'yearly' THEN date_trunc('year', today::timestamp)::date
               ELSE (created AT TIME ZONE 'UTC')::date END,
           CASE recurring
               WHEN 'daily' THEN today
               WHEN 'monthly' THEN date_trunc('month', today::timestamp)::date
               WHEN 'yearly' THEN date_trunc('year', today::timestamp)::date END,
           CASE recurring
               WHEN 'daily' THEN today
               WHEN 'monthly' THEN (date_trunc('month', today::timestamp) + interval '1 month - 1 day')::date
               WHEN 'yearly' THEN (date_trunc('year', today::timestamp) + interval '1 year - 1 day')::date END
$$;

-- 5. The value a trigger watches over days `first`..`last` (NULL: unbounded), as DESIGN §2b
--    computes it for the category and its descendants (totalprice: every category): `count` the
--    events; `usage` Σ quantity in one unit — never a sum across units (a category whose events
--    come in minutes and in seconds watches the larger of the two sums) — of every currency, and
--    for totalprice the price; `price` Σ quantity × unit_price in the trigger's currency only. An
--    organization-wide scope reads the organization's days for a daily period and its months
--    otherwise (every other period is whole months); an account reads its own days.
CREATE FUNCTION usage_trigger_value(organization text, account text, category text, by text,
                                    price_unit text, first date, last date)
RETURNS numeric LANGUAGE sql STABLE PARALLEL SAFE AS $$
    WITH categories AS (
        SELECT descendant AS slug FROM usage_category_tree
        WHERE ancestor = category AND category <> 'totalprice'
        UNION ALL
        SELECT slug FROM usage_categories WHERE category = 'totalprice'
    ),
    amounts AS (
        SELECT d.event_count, d.quantity, d.amount, d.currency, d.unit
        FROM usage_daily d
        WHERE account IS NOT NULL AND d.organization_id = organization
          AND d.account_id = account
          AND d.day >= COALESCE(first, '-infinity') AND d.day <= COALESCE(last, 'infinity')
          AND d.category IN (SELECT slug FROM categories)
        UNION ALL
        SELECT d.event_count, d.quantity, d.amount, d.currency, d.unit
        FROM usage_daily_totals d
        WHERE account IS NULL AND first IS NOT NULL AND first = last
          AND d.organization_id = organization AND d.day = first
          AND d.category IN (SELECT slug FROM categories)
        UNION ALL
        SELECT m.event_count, m.quantity, m.amount, m.currency, m.unit
        FROM usage_monthly_totals m
        WHERE account IS NULL AND (first IS NULL OR first <> last)
          AND m.organization_id = organization
          AND m.month >= COALESCE(first, '-infinity') AND m.month <= COALESCE(last, 'infinity')
          AND m.category IN (SELECT slug FROM categories)
    )
    SELECT COALESCE(trim_scale(CASE
        WHEN by = 'count' THEN (SELECT sum(event_count) FROM amounts)
        WHEN by = 'usage' AND category <> 'totalprice' THEN
            (SELECT max(per_unit) FROM (SELECT sum(quantity) AS per_unit FROM amounts
                                        GROUP BY unit) units)
        ELSE (SELECT sum(amount) FROM amounts WHERE lower(currency) = price_unit) END), 0)
$$;
