SELECT service_name, name,
       approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) / 1e6 AS p99_ms
FROM spans WHERE kind = 'SERVER' AND start_time > now() - INTERVAL '1 hour'
GROUP BY service_name, name ORDER BY p99_ms DESC LIMIT 10;