-- b24act store, PostgreSQL dialect: what each action was last registered with on each portal.
-- Keep in step with ../sqlite/0004_action_registrations.sql: same tables, columns and meanings.

-- One row per action this app registered on a portal: a fingerprint of its kind and definition
-- (handler URL included). bizproc.activity.list and bizproc.robot.list name codes only
-- (docs/protocol.md §1.4), so this is how a sync tells a registration that is current from one
-- to update. Deleted with the registration.
CREATE TABLE action_registrations (
    member_id   TEXT NOT NULL,
    code        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (member_id, code)
);
