SELECT bucket_start, source, target, metric, rule, value, mean, upper
FROM edge_anomalies('1m', '1h')
ORDER BY bucket_start DESC, source, target;