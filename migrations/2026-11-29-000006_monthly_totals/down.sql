DROP TABLE usage_monthly_totals;
