DROP TABLE usage_daily_totals;
DROP TABLE usage_daily;
ALTER TABLE usage_events DROP COLUMN category;
DROP FUNCTION usage_default_category(text, text);
DROP TABLE usage_category_tree;
DROP TABLE usage_categories;
