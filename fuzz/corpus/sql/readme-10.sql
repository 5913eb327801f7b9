SELECT node, metric, value, mean, zscore, days_used FROM node_seasonal('1h', 7)
WHERE abs(zscore) > 3 ORDER BY abs(zscore) DESC;