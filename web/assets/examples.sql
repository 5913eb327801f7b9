-- Spans and errors per service in the last hour
SELECT service_name, count(*) AS spans,
       sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors
FROM spans WHERE start_time > now() - INTERVAL '1 hour'
GROUP BY service_name ORDER BY spans DESC;

-- p99 latency of each server operation
SELECT service_name, name,
       approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) / 1e6 AS p99_ms
FROM spans WHERE kind = 'SERVER' AND start_time > now() - INTERVAL '1 hour'
GROUP BY service_name, name ORDER BY p99_ms DESC LIMIT 10;

-- Calls and error rate per minute of one service
SELECT date_bin(INTERVAL '1 minute', start_time) AS minute, count(*) AS calls,
       avg(CASE WHEN status_code = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate
FROM spans WHERE service_name = 'orders' AND start_time > now() - INTERVAL '1 hour'
GROUP BY minute ORDER BY minute;

-- Who calls whom: service-to-service calls from parent/child spans
SELECT parent.service_name AS caller, child.service_name AS callee, count(*) AS calls,
       approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY child.duration_ns) / 1e6 AS p95_ms
FROM spans child JOIN spans parent
  ON child.trace_id = parent.trace_id AND child.parent_span_id = parent.span_id
WHERE child.service_name <> parent.service_name
GROUP BY caller, callee ORDER BY calls DESC;

-- One trace, in order
SELECT service_name, name, kind, start_time, duration_ns / 1e6 AS ms, status_code, span_id, parent_span_id
FROM spans WHERE trace_id = '5b8efff798038103d269b633813fc60c' ORDER BY start_time;

-- The slowest dependencies of the last hour, with an example of a failed call
SELECT e.source, e.target, e.calls, e.error_rate, e.p99_ms,
       (SELECT min(s.trace_id) FROM spans s
         WHERE s.service_name = e.source AND s.status_code = 'ERROR') AS failed_trace
FROM edges_between(now() - INTERVAL '1 hour', now()) e
ORDER BY e.p99_ms DESC LIMIT 10;

-- Feedback loops right now
SELECT id, nodes, calls, trace_loops FROM feedback_loops;

-- Edges failing a control rule in the last 15 minutes, against the hour before
SELECT bucket_start, source, target, metric, rule, value, mean, upper
FROM edge_anomalies('1m', '1h')
ORDER BY bucket_start DESC, source, target;

-- What changed in the graph's shape over the last 6 hours, step by 5 minutes
SELECT at, event, subject, before, after
FROM topology_events(now() - INTERVAL '6 hours', now(), '5m') ORDER BY at DESC;
