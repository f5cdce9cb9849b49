-- b24act store, SQLite dialect: the console's overview.
-- Keep in step with ../postgres/0005_console.sql.

-- Jobs by portal, action and state (Store::job_counts, for the console's overview and the
-- b24act_jobs gauge) in one pass over this covering index instead of a scan of the table and a
-- temporary B-tree: at 100,000 jobs, 10 ms instead of 130–160 ms (EXPLAIN QUERY PLAN:
-- "SCAN jobs USING COVERING INDEX jobs_by_portal_action_state"). Its cost at intake is in
-- BENCHMARKS.md (the console scenario).
CREATE INDEX jobs_by_portal_action_state ON jobs (member_id, action_code, state);
