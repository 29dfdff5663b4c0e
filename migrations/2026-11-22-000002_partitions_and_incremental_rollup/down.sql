DROP TABLE idempotency_keys;
ALTER TABLE organizations DROP COLUMN data_version, DROP COLUMN rolled_up_at;
DROP TABLE rollup_dirty;
DROP TABLE usage_voids;
CREATE TABLE usage_events_unpartitioned (LIKE usage_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE usage_events_unpartitioned DROP COLUMN seq;
INSERT INTO usage_events_unpartitioned
    SELECT event_id, account_id, product_id, aggr_product_id, usage_type, description, currency,
           direction, resolution, unit, unit_price, wallet_name, quantity, occurred_at, ingested_at
    FROM usage_events;
DROP TABLE usage_events;
DROP FUNCTION usage_events_ensure_partition(date);
DROP TABLE usage_event_ids;
ALTER TABLE usage_events_unpartitioned RENAME TO usage_events;
ALTER TABLE usage_events ADD PRIMARY KEY (event_id);
ALTER TABLE usage_events ADD FOREIGN KEY (account_id) REFERENCES accounts (id);
CREATE INDEX usage_events_account_occurred_idx ON usage_events (account_id, occurred_at);
