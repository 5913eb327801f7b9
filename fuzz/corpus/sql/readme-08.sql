SELECT at, event, subject, before, after
FROM topology_events(now() - INTERVAL '6 hours', now(), '5m') ORDER BY at DESC;