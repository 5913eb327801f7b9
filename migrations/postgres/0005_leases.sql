-- Several processes on one metadata database (PostgreSQL) must not evaluate a rule twice at
-- once nor send one notification twice at once.
--
-- A rule's evaluations and group notifications are done by whoever holds its lease:
-- `lease_owner` (a process's id) until `lease_until` (unix ms). The holder renews it at each
-- evaluation; another process takes it over once it has expired.
ALTER TABLE alert_rules ADD COLUMN lease_owner TEXT;
ALTER TABLE alert_rules ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;

-- An outbox row being delivered is claimed until `claimed_until` (unix ms): other workers
-- skip it meanwhile; if its worker dies, it is due again when the claim ends.
ALTER TABLE outbox ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;
