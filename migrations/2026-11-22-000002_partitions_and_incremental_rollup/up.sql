-- Ingestion at scale and incremental rollups.

-- 1. The idempotency ledger: one row per event id ever accepted, whatever its month. A
--    partitioned table cannot enforce a unique event_id across partitions, so this table does;
--    it also finds an event's account and month by id (voids).
--    Its key compares bytes (COLLATE "C"): half the cost of a locale-aware btree at ingest,
--    and an idempotency key has no need for linguistic order.
CREATE TABLE usage_event_ids (
    event_id    text        COLLATE "C" PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 128),
    account_id  text        NOT NULL,
    occurred_at timestamptz NOT NULL
);

-- 2. usage_events partitioned by UTC month of occurred_at; partitions are created on demand by
--    usage_events_ensure_partition (ingest calls it for every month it is about to write).
ALTER TABLE usage_events RENAME TO usage_events_unpartitioned;
ALTER INDEX usage_events_account_occurred_idx RENAME TO usage_events_unpartitioned_account_idx;

--    No index on event_id (the ledger is the unique one); a cheap identity is the key, and the
--    one secondary index, by account and time, serves the incremental rollup.
CREATE TABLE usage_events (
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    event_id        text        NOT NULL CHECK (length(event_id) BETWEEN 1 AND 128),
    account_id      text        COLLATE "C" NOT NULL,
    product_id      text        NOT NULL,
    aggr_product_id text        NOT NULL,
    usage_type      text        NOT NULL CHECK (usage_type IN ('AMD', 'API_REQUEST', 'CALL',
                        'CALL_SERVICE', 'CREDIT_COMMIT', 'DIALER', 'MESSAGE', 'NUMBER',
                        'PRODUCT_SERVICE', 'RECHARGE', 'SPEECH_TRANSCRIPTION',
                        'VOICEMAIL_TRANSCRIPTION', 'OTHER')),
    description     text        NOT NULL,
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    direction       text        CHECK (direction IN ('INBOUND', 'OUTBOUND', 'OTHER')),
    resolution      text        CHECK (resolution IN ('ABANDONED', 'ANSWERED', 'MACHINE',
                        'MISSED', 'VOICEMAIL', 'OTHER')),
    unit            text        NOT NULL CHECK (unit IN ('CHARS', 'CONVERSATIONS', 'GB',
                        'MINUTES', 'NUMBERS', 'PAGES', 'REQUESTS', 'SECONDS', 'SEGMENTS',
                        'SESSIONS', 'OTHER')),
    unit_price      numeric     NOT NULL CHECK (unit_price >= 0),
    wallet_name     text        NOT NULL,
    quantity        numeric     NOT NULL CHECK (quantity >= 0),
    occurred_at     timestamptz NOT NULL,
    ingested_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (seq, occurred_at)
) PARTITION BY RANGE (occurred_at);
-- The incremental rollup recomputes one (account, month) at a time.
CREATE INDEX usage_events_account_occurred_idx ON usage_events (account_id, occurred_at);

-- Creates the partition holding `month` (any date in it) unless it exists; safe to race.
-- A standalone table then ATTACH PARTITION: attaching takes SHARE UPDATE EXCLUSIVE on the
-- parent, which does not wait for (or block) reads and inserts, where CREATE TABLE … PARTITION OF
-- would take ACCESS EXCLUSIVE and stall every query on usage_events behind any running one.
-- Attaching builds the parent's indexes on the new, empty table.
CREATE FUNCTION usage_events_ensure_partition(month date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', month)::date;
    name  text := format('usage_events_%s', to_char(first, 'YYYY_MM'));
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I (LIKE usage_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
    EXECUTE format(
        'ALTER TABLE usage_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        name,
        first::text || ' 00:00:00+00',
        (first + interval '1 month')::date::text || ' 00:00:00+00');
EXCEPTION WHEN duplicate_table OR unique_violation THEN
    -- Another session created it between our check and our CREATE.
    NULL;
END;
$$;

SELECT usage_events_ensure_partition(m::date)
FROM (SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC') AS m
      FROM usage_events_unpartitioned) months;
INSERT INTO usage_events (event_id, account_id, product_id, aggr_product_id, usage_type,
                          description, currency, direction, resolution, unit, unit_price,
                          wallet_name, quantity, occurred_at, ingested_at)
    SELECT event_id, account_id, product_id, aggr_product_id, usage_type, description, currency,
           direction, resolution, unit, unit_price, wallet_name, quantity, occurred_at,
           ingested_at
    FROM usage_events_unpartitioned;
INSERT INTO usage_event_ids (event_id, account_id, occurred_at)
    SELECT event_id, account_id, occurred_at FROM usage_events_unpartitioned;
DROP TABLE usage_events_unpartitioned;

-- 3. Voids: a correction names an earlier event, which the rollup then leaves out. The void's
--    own event_id is in the ledger like any event's, so a repeated void is a duplicate.
CREATE TABLE usage_voids (
    event_id        text        PRIMARY KEY,
    voided_event_id text        NOT NULL UNIQUE,
    account_id      text        NOT NULL,
    month           date        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- 4. Dirty marks: every (account, month) whose events changed since its last rollup, written in
--    the same transaction as the events. marked_at is the first time it became dirty, so the
--    oldest mark of an organization tells up to when its aggregates are complete (as_of).
CREATE TABLE rollup_dirty (
    account_id      text        NOT NULL,
    month           date        NOT NULL,
    organization_id text        NOT NULL,
    marked_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, month)
);
CREATE INDEX rollup_dirty_org_idx ON rollup_dirty (organization_id, marked_at);
CREATE INDEX rollup_dirty_marked_idx ON rollup_dirty (marked_at);

-- 5. Every rollup that changes an organization's aggregates bumps its data version.
ALTER TABLE organizations
    ADD COLUMN data_version bigint      NOT NULL DEFAULT 0,
    ADD COLUMN rolled_up_at timestamptz;

-- 6. Idempotency-Key of POST /express/usage/events: the stored answer is replayed.
CREATE TABLE idempotency_keys (
    organization_id text        NOT NULL,
    key             text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash    text        NOT NULL,
    response        text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, key)
);
