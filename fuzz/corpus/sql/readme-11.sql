SELECT DISTINCT source, target, metric, rule FROM edge_anomalies('1m', '1h')
WHERE bucket_start > now() - INTERVAL '3 minutes' AND metric IN ('error_rate', 'p99_ms');