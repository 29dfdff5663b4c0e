DROP TABLE usage_monthly;
DROP TABLE usage_events;
DROP TABLE accounts;
DROP TABLE organizations;
