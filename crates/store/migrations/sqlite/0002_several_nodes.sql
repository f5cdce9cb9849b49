-- b24act store, SQLite dialect: what several nodes on one database share (on SQLite, one node:
-- the budget table stays empty, the in-process limiter paces).
-- Keep in step with ../postgres/0002_several_nodes.sql: same tables, columns and meanings.

-- A delivery whose send may have reached the portal although nothing recorded its answer (the
-- sender died, or the request failed after the portal may have run it). Such a result that the
-- portal later answers "not found" was most likely taken by the workflow the first time: it is
-- `done` with delivery_unconfirmed, never sent again and never dead.
ALTER TABLE jobs ADD COLUMN send_uncertain INTEGER NOT NULL DEFAULT 0
    CHECK (send_uncertain IN (0, 1));
ALTER TABLE jobs ADD COLUMN delivery_unconfirmed INTEGER NOT NULL DEFAULT 0
    CHECK (delivery_unconfirmed IN (0, 1));

-- Runnable jobs by portal, so a claim can take a few from every portal (round-robin) without
-- reading one portal's whole backlog.
CREATE INDEX jobs_run_due_by_member ON jobs (member_id, next_run_at, id)
    WHERE state IN ('queued', 'retry_wait', 'running');

-- The fingerprint of the registrations last made on each portal (actions, handler URL): a
-- start whose catalog gives the same fingerprint registers nothing there.
ALTER TABLE installations ADD COLUMN registrations TEXT;

-- Each portal's request budget, shared by every node (GCRA): the Unix time in milliseconds at
-- which the portal's leaky bucket would be empty if nothing more were sent.
CREATE TABLE portal_budgets (
    portal   TEXT PRIMARY KEY,
    empty_at REAL NOT NULL
) STRICT;

-- Workflow-log lines (bizproc.activity.log) waiting to be sent, with the job they belong to.
-- A sender holds a line until claimed_until; it is deleted once a batch carried it.
CREATE TABLE progress_lines (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    member_id     TEXT    NOT NULL,
    message       TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    claimed_until INTEGER
) STRICT;
CREATE INDEX progress_lines_by_member ON progress_lines (member_id, id);
