-- b24act store, PostgreSQL dialect: the console's overview.
-- Keep in step with ../sqlite/0005_console.sql.

-- Jobs by portal, action and state (Store::job_counts, for the console's overview and the
-- b24act_jobs gauge) from this index (an index-only scan once the table is vacuumed) instead of
-- a scan of the table. Its cost at intake is in BENCHMARKS.md (the console scenario).
CREATE INDEX jobs_by_portal_action_state ON jobs (member_id, action_code, state);
