DROP TRIGGER accounts_deleted ON accounts;
DROP TRIGGER accounts_updated ON accounts;
DROP TRIGGER accounts_inserted ON accounts;
DROP TRIGGER usage_monthly_deleted ON usage_monthly;
DROP TRIGGER usage_monthly_updated ON usage_monthly;
DROP TRIGGER usage_monthly_inserted ON usage_monthly;
DROP FUNCTION bump_data_version();
DROP FUNCTION organizations_bump_data_version(text[]);
DROP TABLE signing_keys;
