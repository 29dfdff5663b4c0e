DROP FUNCTION usage_trigger_value(text, text, text, text, text, date, date);
DROP FUNCTION usage_trigger_period(text, timestamptz, date);
DROP TABLE usage_trigger_attempts;
DROP TABLE usage_trigger_firings;
DROP TABLE usage_triggers;
