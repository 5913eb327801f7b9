SELECT service_name, name, kind, start_time, duration_ns / 1e6 AS ms, status_code, span_id, parent_span_id
FROM spans WHERE trace_id = '5b8efff798038103d269b633813fc60c' ORDER BY start_time;