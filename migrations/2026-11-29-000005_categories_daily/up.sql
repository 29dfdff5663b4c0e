-- Usage records by category and period (DESIGN §2b): the category catalogue as data, an optional
-- category on every event, and daily aggregates the rollup keeps exact beside usage_monthly.

-- 1. The catalogue, in its documented order (`position`): a category's amounts include its
--    descendants', which usage_category_tree lists (every category is its own descendant).
CREATE TABLE usage_categories (
    slug        text    PRIMARY KEY,
    parent      text    REFERENCES usage_categories (slug),
    position    integer NOT NULL UNIQUE,
    description text    NOT NULL,
    count_unit  text    NOT NULL
);

INSERT INTO usage_categories (position, slug, parent, description, count_unit) VALUES
    ( 1, 'calls',                      NULL,            'All voice calls',                    'calls'),
    ( 2, 'calls-inbound',              'calls',         'Inbound voice calls',                'calls'),
    ( 3, 'calls-inbound-local',        'calls-inbound', 'Inbound calls to local numbers',     'calls'),
    ( 4, 'calls-inbound-tollfree',     'calls-inbound', 'Inbound calls to toll-free numbers', 'calls'),
    ( 5, 'calls-outbound',             'calls',         'Outbound voice calls',               'calls'),
    ( 6, 'calls-client',               'calls',         'Client and web calls',               'calls'),
    ( 7, 'calls-sip',                  'calls',         'SIP calls',                          'calls'),
    ( 8, 'sms',                        NULL,            'All SMS messages',                   'messages'),
    ( 9, 'sms-inbound',                'sms',           'Inbound SMS',                        'messages'),
    (10, 'sms-inbound-shortcode',      'sms-inbound',   'Inbound SMS to short codes',         'messages'),
    (11, 'sms-inbound-longcode',       'sms-inbound',   'Inbound SMS to long codes',          'messages'),
    (12, 'sms-outbound',               'sms',           'Outbound SMS',                       'messages'),
    (13, 'sms-outbound-shortcode',     'sms-outbound',  'Outbound SMS from short codes',      'messages'),
    (14, 'sms-outbound-longcode',      'sms-outbound',  'Outbound SMS from long codes',       'messages'),
    (15, 'phonenumbers',               NULL,            'Phone numbers',                      'numbers'),
    (16, 'phonenumbers-tollfree',      'phonenumbers',  'Toll-free numbers',                  'numbers'),
    (17, 'phonenumbers-local',         'phonenumbers',  'Local numbers',                      'numbers'),
    (18, 'phonenumbers-purchase',      'phonenumbers',  'One-time number purchase fees',      'numbers'),
    (19, 'shortcodes',                 NULL,            'Short codes',                        'shortcodes'),
    (20, 'shortcodes-vanity',          'shortcodes',    'Vanity short codes',                 'shortcodes'),
    (21, 'shortcodes-random',          'shortcodes',    'Random short codes',                 'shortcodes'),
    (22, 'shortcodes-customerowned',   'shortcodes',    'Customer-owned short codes',         'shortcodes'),
    (23, 'subscriptions',              NULL,            'Subscription fees',                  'subscriptions'),
    (24, 'subscriptions-phonenumbers', 'subscriptions', 'Number renewals',                    'subscriptions'),
    (25, 'subscriptions-premium',      'subscriptions', 'Premium plan',                       'subscriptions'),
    (26, 'calleridlookups',            NULL,            'Caller-name lookups',                'lookups'),
    (27, 'recordings',                 NULL,            'Call recordings',                    'recordings'),
    (28, 'recordingstorage',           NULL,            'Recording storage',                  'recordings'),
    (29, 'transcriptions',             NULL,            'Transcriptions',                     'transcriptions'),
    (30, 'voicemail',                  NULL,            'Voicemail',                          'voicemails'),
    (31, 'voicemail-company',          'voicemail',     'Company voicemail',                  'voicemails'),
    (32, 'voicemail-user',             'voicemail',     'User voicemail',                     'voicemails'),
    (33, 'fax-inbound',                NULL,            'Incoming fax',                       'faxes'),
    (34, 'ivr',                        NULL,            'IVR menus and voice apps',           'sessions'),
    (35, 'conference',                 NULL,            'Conferencing',                       'conferences'),
    (36, 'overuse',                    NULL,            'Usage beyond plan limits',           'events'),
    (37, 'amd',                        NULL,            'Answering-machine detection',        'detections'),
    (38, 'api-requests',               NULL,            'API requests',                       'requests'),
    (39, 'call-services',              NULL,            'Call services',                      'events'),
    (40, 'credit-commits',             NULL,            'Credit commits',                     'events'),
    (41, 'dialer',                     NULL,            'Dialer',                             'events'),
    (42, 'product-services',           NULL,            'Product services',                   'events'),
    (43, 'recharges',                  NULL,            'Recharges',                          'events'),
    (44, 'other',                      NULL,            'Other usage',                        'events'),
    (45, 'totalprice',                 NULL,            'Total price of all usage',           '');

CREATE TABLE usage_category_tree (
    ancestor   text NOT NULL REFERENCES usage_categories (slug),
    descendant text NOT NULL REFERENCES usage_categories (slug),
    PRIMARY KEY (ancestor, descendant)
);
INSERT INTO usage_category_tree (ancestor, descendant)
WITH RECURSIVE tree (ancestor, descendant) AS (
    SELECT slug, slug FROM usage_categories
    UNION ALL
    SELECT t.ancestor, c.slug FROM tree t JOIN usage_categories c ON c.parent = t.descendant
)
SELECT ancestor, descendant FROM tree;

-- 2. The category of an event without one: the catalogue's default for its type and direction.
--    The one place this mapping lives (the rollup and the raw records both call it).
CREATE FUNCTION usage_default_category(usage_type text, direction text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE usage_type
        WHEN 'CALL' THEN CASE direction WHEN 'INBOUND' THEN 'calls-inbound'
                                        WHEN 'OUTBOUND' THEN 'calls-outbound'
                                        ELSE 'calls' END
        WHEN 'MESSAGE' THEN CASE direction WHEN 'INBOUND' THEN 'sms-inbound'
                                           WHEN 'OUTBOUND' THEN 'sms-outbound'
                                           ELSE 'sms' END
        WHEN 'NUMBER' THEN 'phonenumbers'
        WHEN 'SPEECH_TRANSCRIPTION' THEN 'transcriptions'
        WHEN 'VOICEMAIL_TRANSCRIPTION' THEN 'transcriptions'
        WHEN 'AMD' THEN 'amd'
        WHEN 'API_REQUEST' THEN 'api-requests'
        WHEN 'CALL_SERVICE' THEN 'call-services'
        WHEN 'CREDIT_COMMIT' THEN 'credit-commits'
        WHEN 'DIALER' THEN 'dialer'
        WHEN 'PRODUCT_SERVICE' THEN 'product-services'
        WHEN 'RECHARGE' THEN 'recharges'
        ELSE 'other'
    END
$$;

-- An event's explicit category (null: the default above). Adding a nullable column without a
-- default rewrites nothing, however many events there are; partitions created later copy it.
ALTER TABLE usage_events ADD COLUMN category text;

-- 3. Daily aggregates, written by the rollup in the same statement as usage_monthly, from the
--    same events (voids left out, accounts that still exist): per (organization, account,
--    category, currency, unit, UTC day) the number of events, Σ quantity and Σ quantity ×
--    unit_price, exact. An account's range of days is one index range.
CREATE TABLE usage_daily (
    organization_id text    NOT NULL,
    account_id      text    NOT NULL,
    day             date    NOT NULL,
    category        text    NOT NULL,
    currency        text    NOT NULL,
    unit            text    NOT NULL,
    event_count     bigint  NOT NULL CHECK (event_count > 0),
    quantity        numeric NOT NULL,
    amount          numeric NOT NULL,
    PRIMARY KEY (organization_id, account_id, day, category, currency, unit)
);

-- The rollup recomputes an account's month across organizations (an account that moved has its
-- days found wherever they are).
CREATE INDEX usage_daily_account_day_idx ON usage_daily (account_id, day);

-- The same per organization (all its accounts): what an organization-wide record reads, so a
-- reseller of thousands of accounts reads a year from a few rows per day. The rollup keeps it
-- equal to the sum of usage_daily by adding the difference it makes to an account's days.
CREATE TABLE usage_daily_totals (
    organization_id text    NOT NULL,
    day             date    NOT NULL,
    category        text    NOT NULL,
    currency        text    NOT NULL,
    unit            text    NOT NULL,
    -- 0 once every event of the day is voided or moved away: the rollup adds differences and
    -- cannot delete in the same statement; reads skip such rows and a full rebuild drops them.
    -- (No CHECK: Postgres checks the row an upsert proposes, a negative difference, before it
    -- finds the row the difference is added to.)
    event_count     bigint  NOT NULL,
    quantity        numeric NOT NULL,
    amount          numeric NOT NULL,
    PRIMARY KEY (organization_id, day, category, currency, unit)
);

-- Records are validated by the organization's data version like every other read: a change to
-- an account's days moves it (usage_daily_totals only ever changes with usage_daily).
CREATE TRIGGER usage_daily_inserted AFTER INSERT ON usage_daily
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();
CREATE TRIGGER usage_daily_updated AFTER UPDATE ON usage_daily
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();
CREATE TRIGGER usage_daily_deleted AFTER DELETE ON usage_daily
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();

-- Both are filled by the next rollup: every (organization, account, month) with events is
-- marked dirty.
INSERT INTO rollup_dirty (organization_id, account_id, month)
SELECT DISTINCT organization_id, account_id, month FROM usage_monthly
ON CONFLICT DO NOTHING;
