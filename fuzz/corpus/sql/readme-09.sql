SELECT bucket_start, value, lower, upper, ewma, cusum_high, in_baseline
FROM edge_control('1m', '1h', 3, now() - INTERVAL '30 minutes', now())
WHERE source = 'orders' AND target = 'payments' AND metric = 'error_rate'
ORDER BY bucket_start;