-- Secrets that every replica of the server must share. 'page-cursor' signs the position tokens
-- that page links carry, so that a link issued by one replica is honoured by any other, and a
-- token cannot be forged or altered. Made here from two random uuids (244 random bits).
CREATE TABLE signing_keys (
    name       text PRIMARY KEY,
    secret     bytea       NOT NULL CHECK (octet_length(secret) >= 16),
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO signing_keys (name, secret)
VALUES ('page-cursor',
        decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));

-- organizations.data_version names one state of an organization's readable data: its
-- usage_monthly rows and its set of accounts. The read path caches counts, account sets and
-- ETags per version, so every change must move it, in the same transaction, whatever makes
-- the change (the rollup, an account import, a hand-written fix). Statement-level triggers
-- guarantee that. Rows are locked in id order so that concurrent bumps cannot deadlock.
CREATE FUNCTION organizations_bump_data_version(orgs text[]) RETURNS void
LANGUAGE sql SET search_path FROM CURRENT AS $$
    UPDATE organizations o
       SET data_version = o.data_version + 1
      FROM (SELECT id FROM organizations WHERE id = ANY (orgs) ORDER BY id FOR UPDATE) locked
     WHERE o.id = locked.id
$$;

CREATE FUNCTION bump_data_version() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM organizations_bump_data_version(
            ARRAY(SELECT DISTINCT organization_id FROM new_rows));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM organizations_bump_data_version(
            ARRAY(SELECT organization_id FROM old_rows UNION SELECT organization_id FROM new_rows));
    ELSE
        PERFORM organizations_bump_data_version(
            ARRAY(SELECT DISTINCT organization_id FROM old_rows));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER usage_monthly_inserted AFTER INSERT ON usage_monthly
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();
CREATE TRIGGER usage_monthly_updated AFTER UPDATE ON usage_monthly
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();
CREATE TRIGGER usage_monthly_deleted AFTER DELETE ON usage_monthly
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();

CREATE TRIGGER accounts_inserted AFTER INSERT ON accounts
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();
CREATE TRIGGER accounts_updated AFTER UPDATE ON accounts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();
CREATE TRIGGER accounts_deleted AFTER DELETE ON accounts
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();
