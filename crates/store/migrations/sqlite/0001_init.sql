-- b24act store, SQLite dialect. Times are Unix milliseconds (INTEGER); JSON is TEXT.
-- Keep in step with ../postgres/0001_init.sql: same tables, columns and meanings.

CREATE TABLE installations (
    member_id         TEXT    PRIMARY KEY,
    domain            TEXT    NOT NULL,
    client_endpoint   TEXT    NOT NULL,
    server_endpoint   TEXT    NOT NULL,
    -- The three secrets are XChaCha20-Poly1305 ciphertexts (see src/cipher.rs).
    application_token BLOB    NOT NULL,
    access_token      BLOB    NOT NULL,
    refresh_token     BLOB,
    expires_at        INTEGER NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('active', 'uninstalled')),
    installed_at      INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
) STRICT;

CREATE TABLE jobs (
    -- AUTOINCREMENT: an id is never reused, so it is safe as a connector's idempotency key.
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
    -- queued/retry_wait: when to run; running: when the lease expires (then it is due again).
    next_run_at       INTEGER,
    lease_owner       TEXT,
    lease_until       INTEGER,
    result            TEXT,
    result_kind       TEXT    CHECK (result_kind IN ('success', 'fallback')),
    delivery_attempts INTEGER NOT NULL DEFAULT 0,
    -- delivering: when to send; while a sender holds it, when its lease expires.
    next_delivery_at  INTEGER,
    delivered_at      INTEGER,
    dead_reason       TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
) STRICT;

-- The predicates are repeated verbatim in the queries so SQLite uses these partial indexes.
CREATE INDEX jobs_run_due ON jobs (next_run_at, id)
    WHERE state IN ('queued', 'retry_wait', 'running');
CREATE INDEX jobs_delivery_due ON jobs (next_delivery_at, id)
    WHERE state = 'delivering';
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_member ON jobs (member_id, state);

CREATE TABLE attempts (
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL CHECK (kind IN ('execute', 'deliver')),
    number      INTEGER NOT NULL,
    worker      TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT,
    error       TEXT,
    PRIMARY KEY (job_id, kind, number)
) STRICT;
