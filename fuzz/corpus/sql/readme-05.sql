SELECT e.source, e.target, e.calls, e.error_rate, e.p99_ms,
       (SELECT min(s.trace_id) FROM spans s
         WHERE s.service_name = e.source AND s.status_code = 'ERROR') AS failed_trace
FROM edges_between(now() - INTERVAL '1 hour', now()) e
ORDER BY e.p99_ms DESC LIMIT 10;