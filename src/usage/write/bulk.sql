-- Moves one staged batch (COPY'd into ingest_staging) into usage_events, in one statement:
--   staged:   rows whose account exists, with its organization, the first line of each
--             (organization, event id) (later lines of the same id are duplicates), ordered by
--             (organization, event id), the order every writer locks ledger entries in;
--   claimed:  the (organization, event id)s new to the ledger (the rest were seen before in
--             that organization: duplicates);
--   inserted: those events, into their month's partition;
--   marked:   every (account, month) they touch, dirty for the rollup (DO UPDATE: see
--             ingest::mark_dirty for why not DO NOTHING).
WITH unknown AS (
    -- Lines naming no known account: rejected, reported with their line numbers. Part of the
    -- same statement, so the counts below and this list come from one snapshot.
    SELECT s.line, s.account_id
    FROM ingest_staging s
    WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = s.account_id)
),
staged AS (
    SELECT DISTINCT ON (a.organization_id COLLATE "C", s.event_id COLLATE "C")
           s.*, a.organization_id
    FROM ingest_staging s
    JOIN accounts a ON a.id = s.account_id
    ORDER BY a.organization_id COLLATE "C", s.event_id COLLATE "C", s.line
),
claimed AS (
    INSERT INTO usage_event_ids (organization_id, event_id, account_id, occurred_at)
    SELECT organization_id, event_id, account_id, occurred_at FROM staged
    ON CONFLICT DO NOTHING
    RETURNING organization_id, event_id
),
inserted AS (
    INSERT INTO usage_events (organization_id, event_id, account_id, product_id,
                              aggr_product_id, usage_type, description, currency, direction,
                              resolution, unit, unit_price, wallet_name, quantity, occurred_at,
                              category)
    SELECT s.organization_id, s.event_id, s.account_id, s.product_id, s.aggr_product_id,
           s.usage_type, s.description, s.currency, s.direction, s.resolution, s.unit,
           s.unit_price, s.wallet_name, s.quantity, s.occurred_at, s.category
    FROM staged s
    JOIN claimed c ON c.organization_id = s.organization_id AND c.event_id = s.event_id
    RETURNING organization_id, account_id, occurred_at
),
months AS (
    SELECT DISTINCT i.organization_id, i.account_id,
           date_trunc('month', i.occurred_at AT TIME ZONE 'UTC')::date AS month
    FROM inserted i
),
marked AS (
    INSERT INTO rollup_dirty (organization_id, account_id, month)
    SELECT m.organization_id, m.account_id, m.month
    FROM months m
    ORDER BY m.organization_id COLLATE "C", m.account_id COLLATE "C", m.month
    ON CONFLICT (organization_id, account_id, month)
        DO UPDATE SET version = rollup_dirty.version + 1
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS accepted,
       (SELECT count(*) FROM marked)   AS marked,
       (SELECT count(*) FROM ingest_staging) AS staged,
       (SELECT coalesce(array_agg(line ORDER BY line), '{}') FROM unknown)       AS unknown_lines,
       (SELECT coalesce(array_agg(account_id ORDER BY line), '{}') FROM unknown) AS unknown_accounts
