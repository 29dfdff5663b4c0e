-- Organizations own accounts; every read is scoped to one organization.
CREATE TABLE organizations (
    id          text        PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    name        text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id              text        PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    organization_id text        NOT NULL REFERENCES organizations (id),
    name            text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- The ownership check asks "which of these ids belong to this organization?".
CREATE UNIQUE INDEX accounts_organization_id_idx ON accounts (organization_id, id);

-- Raw usage, append-only. event_id is the producer's idempotency key: a repeat is a duplicate.
CREATE TABLE usage_events (
    event_id        text        PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 128),
    account_id      text        NOT NULL REFERENCES accounts (id),
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
    ingested_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_events_account_occurred_idx ON usage_events (account_id, occurred_at);

-- The rollup: one row per (account, product, aggr product, month, type, description, currency,
-- direction, resolution, unit, unit price, wallet). Written only by the rollup.
CREATE TABLE usage_monthly (
    id              uuid        PRIMARY KEY,
    organization_id text        NOT NULL,
    account_id      text        NOT NULL,
    product_id      text        NOT NULL,
    aggr_product_id text        NOT NULL,
    month           date        NOT NULL CHECK (extract(day FROM month) = 1),
    usage_type      text        NOT NULL,
    description     text        NOT NULL,
    currency        text        NOT NULL,
    direction       text,
    resolution      text,
    unit            text        NOT NULL,
    price           numeric     NOT NULL,
    wallet_name     text        NOT NULL,
    number_of_units numeric     NOT NULL,
    total_amount    numeric     NOT NULL,
    event_count     bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- Paging is always inside one organization: the default order (id) and the two filters the
-- reference documents (account, month) each get an index led by organization_id.
CREATE UNIQUE INDEX usage_monthly_org_id_idx ON usage_monthly (organization_id, id);
CREATE INDEX usage_monthly_org_account_month_idx ON usage_monthly (organization_id, account_id, month, id);
CREATE INDEX usage_monthly_org_month_idx ON usage_monthly (organization_id, month, id);
