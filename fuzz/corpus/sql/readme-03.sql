SELECT parent.service_name AS caller, child.service_name AS callee, count(*) AS calls,
       approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY child.duration_ns) / 1e6 AS p95_ms
FROM spans child JOIN spans parent
  ON child.trace_id = parent.trace_id AND child.parent_span_id = parent.span_id
WHERE child.service_name <> parent.service_name
GROUP BY caller, callee ORDER BY calls DESC;