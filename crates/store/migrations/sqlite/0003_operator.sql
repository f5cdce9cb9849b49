-- b24act store, SQLite dialect: what operators do to jobs, and finding jobs among many.
-- Keep in step with ../postgres/0003_operator.sql: same tables, columns and meanings.

-- A result an operator typed in (`jobs complete`) is a result kind of its own. SQLite cannot
-- change a CHECK constraint, so `jobs` is built again with it (and with document_id, below).
-- The tables that reference `jobs` are built again too: with foreign keys on (as the store
-- opens every connection, and a migration's transaction cannot switch them off), dropping the
-- old `jobs` would cascade into their rows. So the new tables are made and filled first, the
-- old ones dropped children first, and the new ones renamed into place (a rename rewrites the
-- references to it). The AUTOINCREMENT counters are carried over: an id is never reused.

-- The document a call was about (its id, such as DEAL_42), so an operator finds its jobs.
-- Jobs stored before this migration take it from their payload (version 1 keeps the document
-- as document_id = [module, entity, id]); NULL when the payload has none.
CREATE TABLE jobs_new (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    member_id         TEXT    NOT NULL,
    action_code       TEXT    NOT NULL,
    event_token       TEXT    NOT NULL UNIQUE,
    workflow_id       TEXT    NOT NULL,
    payload           TEXT    NOT NULL,
    payload_version   INTEGER NOT NULL,
    waits_for_result  INTEGER NOT NULL CHECK (waits_for_result IN (0, 1)),
    deadline_at       INTEGER NOT NULL,
    state             TEXT    NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'retry_wait', 'delivering', 'done', 'dead')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_run_at       INTEGER,
    lease_owner       TEXT,
    lease_until       INTEGER,
    result            TEXT,
    result_kind       TEXT    CHECK (result_kind IN ('success', 'fallback', 'manual')),
    delivery_attempts INTEGER NOT NULL DEFAULT 0,
    next_delivery_at  INTEGER,
    delivered_at      INTEGER,
    dead_reason       TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    send_uncertain    INTEGER NOT NULL DEFAULT 0 CHECK (send_uncertain IN (0, 1)),
    delivery_unconfirmed INTEGER NOT NULL DEFAULT 0 CHECK (delivery_unconfirmed IN (0, 1)),
    document_id       TEXT
) STRICT;
INSERT INTO jobs_new (id, member_id, action_code, event_token, workflow_id, payload,
    payload_version, waits_for_result, deadline_at, state, attempts, next_run_at, lease_owner,
    lease_until, result, result_kind, delivery_attempts, next_delivery_at, delivered_at,
    dead_reason, created_at, updated_at, send_uncertain, delivery_unconfirmed, document_id)
SELECT id, member_id, action_code, event_token, workflow_id, payload, payload_version,
    waits_for_result, deadline_at, state, attempts, next_run_at, lease_owner, lease_until, result,
    result_kind, delivery_attempts, next_delivery_at, delivered_at, dead_reason, created_at,
    updated_at, send_uncertain, delivery_unconfirmed,
    CAST(json_extract(payload, '$.document_id[2]') AS TEXT)
FROM jobs;

CREATE TABLE attempts_new (
    job_id      INTEGER NOT NULL REFERENCES jobs_new (id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL CHECK (kind IN ('execute', 'deliver')),
    number      INTEGER NOT NULL,
    worker      TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT,
    error       TEXT,
    PRIMARY KEY (job_id, kind, number)
) STRICT;
INSERT INTO attempts_new SELECT job_id, kind, number, worker, started_at, finished_at, outcome,
    error FROM attempts;

CREATE TABLE progress_lines_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        INTEGER NOT NULL REFERENCES jobs_new (id) ON DELETE CASCADE,
    member_id     TEXT    NOT NULL,
    message       TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    claimed_until INTEGER
) STRICT;
INSERT INTO progress_lines_new SELECT id, job_id, member_id, message, created_at, claimed_until
    FROM progress_lines;

DELETE FROM sqlite_sequence WHERE name IN ('jobs_new', 'progress_lines_new');
INSERT INTO sqlite_sequence (name, seq)
    SELECT name || '_new', seq FROM sqlite_sequence WHERE name IN ('jobs', 'progress_lines');

DROP TABLE attempts;
DROP TABLE progress_lines;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
ALTER TABLE attempts_new RENAME TO attempts;
ALTER TABLE progress_lines_new RENAME TO progress_lines;

-- The indexes of 0001 and 0002, dropped with the old tables. The predicates are repeated
-- verbatim in the queries so SQLite uses the partial ones.
CREATE INDEX jobs_run_due ON jobs (next_run_at, id)
    WHERE state IN ('queued', 'retry_wait', 'running');
CREATE INDEX jobs_delivery_due ON jobs (next_delivery_at, id)
    WHERE state = 'delivering';
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_member ON jobs (member_id, state);
CREATE INDEX jobs_run_due_by_member ON jobs (member_id, next_run_at, id)
    WHERE state IN ('queued', 'retry_wait', 'running');
CREATE INDEX progress_lines_by_member ON progress_lines (member_id, id);

-- What operators did to a job, with who did it; written in the transaction of the change.
CREATE TABLE job_history (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at     INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL
        CHECK (action IN ('retry', 'cancel', 'cancel_with_fallback', 'complete', 'resend')),
    detail TEXT
) STRICT;
CREATE INDEX job_history_by_job ON job_history (job_id, id);

-- The job list's filters, newest first (`ORDER BY id DESC LIMIT n`, paged by `id < before`).
-- Checked with EXPLAIN QUERY PLAN on 100,000 jobs (20 portals, 5 actions):
--   no filter: the primary key, backwards;
--   state: jobs_by_state (state, id);
--   portal: jobs_by_member_id; portal and state: jobs_by_member (member_id, state, rowid);
--   action: jobs_by_action; workflow: jobs_by_workflow; document: jobs_by_document (each
--     with the rowid, so no sort);
--   created since / until: the primary key backwards (ids grow with created_at, so --since
--     stops at the first older job; --until walks past every newer one), which is why there is
--     no created_at index to keep up at intake.
CREATE INDEX jobs_by_member_id ON jobs (member_id, id);
CREATE INDEX jobs_by_action ON jobs (action_code, id);
CREATE INDEX jobs_by_workflow ON jobs (workflow_id);
CREATE INDEX jobs_by_document ON jobs (document_id);
