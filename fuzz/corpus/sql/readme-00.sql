SELECT service_name, count(*) AS spans,
       sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors
FROM spans WHERE start_time > now() - INTERVAL '1 hour'
GROUP BY service_name ORDER BY spans DESC;