-- Every idempotency structure is per organization, and every tenant table leads its primary key
-- with organization_id (what a Citus distribution by organization needs, see docs/SCALING.md).
--
-- Existing data is carried over: each event, ledger entry, void and dirty mark takes the
-- organization its account belongs to now. An account that no longer exists would leave a row
-- without an organization; SET NOT NULL then stops the migration rather than drop billing data.

-- 1. Events carry their organization (added to the partitioned parent, so to every partition).
ALTER TABLE usage_events ADD COLUMN organization_id text;
UPDATE usage_events e SET organization_id = a.organization_id
  FROM accounts a WHERE a.id = e.account_id;
ALTER TABLE usage_events ALTER COLUMN organization_id SET NOT NULL;
-- (Its primary key's name depends on the history of the table: migration 2 renamed one.)
DO $$
BEGIN
    EXECUTE format('ALTER TABLE usage_events DROP CONSTRAINT %I',
                   (SELECT conname FROM pg_constraint
                     WHERE conrelid = 'usage_events'::regclass AND contype = 'p'));
END
$$;
-- (organization, time) leads: an organization's events by time are one index range.
ALTER TABLE usage_events ADD PRIMARY KEY (organization_id, occurred_at, seq);

-- 2. The ledger: an event id is unique within its organization only. Another organization's ids
--    are invisible and never collide.
ALTER TABLE usage_event_ids ADD COLUMN organization_id text COLLATE "C";
UPDATE usage_event_ids l SET organization_id = a.organization_id
  FROM accounts a WHERE a.id = l.account_id;
ALTER TABLE usage_event_ids ALTER COLUMN organization_id SET NOT NULL;
ALTER TABLE usage_event_ids DROP CONSTRAINT usage_event_ids_pkey;
ALTER TABLE usage_event_ids ADD PRIMARY KEY (organization_id, event_id);
-- Moving an account takes its ids along: they are found by account.
CREATE INDEX usage_event_ids_account_idx ON usage_event_ids (account_id);

-- 3. Voids: idempotent by their own id, and one per voided event, both per organization.
ALTER TABLE usage_voids ADD COLUMN organization_id text;
UPDATE usage_voids v SET organization_id = a.organization_id
  FROM accounts a WHERE a.id = v.account_id;
ALTER TABLE usage_voids ALTER COLUMN organization_id SET NOT NULL;
ALTER TABLE usage_voids DROP CONSTRAINT usage_voids_pkey;
ALTER TABLE usage_voids DROP CONSTRAINT usage_voids_voided_event_id_key;
ALTER TABLE usage_voids ADD PRIMARY KEY (organization_id, event_id);
ALTER TABLE usage_voids ADD CONSTRAINT usage_voids_voided_key UNIQUE (organization_id, voided_event_id);
CREATE INDEX usage_voids_account_idx ON usage_voids (account_id);

-- 4. Dirty marks, per (organization, account, month). An account that moved may briefly have a
--    mark under each organization: the rollup recomputes by (account, month) either way.
UPDATE rollup_dirty d SET organization_id = a.organization_id
  FROM accounts a WHERE a.id = d.account_id AND d.organization_id <> a.organization_id
  AND NOT EXISTS (SELECT 1 FROM rollup_dirty o WHERE o.account_id = d.account_id
                  AND o.month = d.month AND o.organization_id = a.organization_id);
ALTER TABLE rollup_dirty DROP CONSTRAINT rollup_dirty_pkey;
ALTER TABLE rollup_dirty ADD PRIMARY KEY (organization_id, account_id, month);

-- 5. Aggregates: (organization, id). The id alone stays stable across rollups, but it is unique
--    only within an organization (a distributed table cannot enforce more).
ALTER TABLE usage_monthly DROP CONSTRAINT usage_monthly_pkey;
DROP INDEX usage_monthly_org_id_idx;
ALTER TABLE usage_monthly ADD PRIMARY KEY (organization_id, id);

-- 6. Idempotency-Key answers expire: the periodic job deletes them by age.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- 7. Which database this is: the system identifier, the timeline and the database's oid.
--    Caches keyed by data_version also key by this, because a point-in-time restore, a
--    failover to a lagging standby (both start a new timeline) or a dump restored into a new
--    database can bring back a data_version already seen with other content. Each server
--    connection reads it once, at connect time (db::pool).
CREATE FUNCTION usage_api_epoch() RETURNS text
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
DECLARE
    system_id text := '';
    timeline  text := '';
BEGIN
    BEGIN
        SELECT system_identifier::text INTO system_id FROM pg_control_system();
        IF pg_is_in_recovery() THEN
            SELECT coalesce((SELECT received_tli::text FROM pg_stat_wal_receiver),
                            (SELECT timeline_id::text FROM pg_control_checkpoint()))
              INTO timeline;
        ELSE
            timeline := substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8);
        END IF;
    EXCEPTION WHEN insufficient_privilege THEN
        -- A role without access to the control data: the database's own identity still
        -- tells a restore into another database apart.
        NULL;
    END;
    RETURN system_id || '/' || coalesce(timeline, '') || '/' ||
           (SELECT oid FROM pg_database WHERE datname = current_database())::text;
END
$$;
