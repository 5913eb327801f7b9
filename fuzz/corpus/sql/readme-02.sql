SELECT date_bin(INTERVAL '1 minute', start_time) AS minute, count(*) AS calls,
       avg(CASE WHEN status_code = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate
FROM spans WHERE service_name = 'orders' AND start_time > now() - INTERVAL '1 hour'
GROUP BY minute ORDER BY minute;