//! Everything the store says differently to SQLite and to PostgreSQL, side by side. Every other
//! statement is the same text on both: both read `$1`, `$2`, … in a fixed text, `ON CONFLICT`,
//! `RETURNING` and window functions.

/// The SQL dialect of the database a store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Opens a write transaction. SQLite: `BEGIN IMMEDIATE`, so the write lock is taken up front
    /// and a read-then-write never fails half-way with `SQLITE_BUSY`.
    pub(crate) fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// Writes the placeholder of parameter `number` (1, 2, …) of a statement put together at
    /// run time. SQLite: `?`, which counts from 1 by position. SQLite keeps `$n` (and `?n`)
    /// parameters in a list it searches for each one bound, so a multi-row insert of thousands
    /// of parameters would bind in quadratic time — five times slower for a 1,000-call group
    /// commit. PostgreSQL: `$n`.
    pub(crate) fn placeholder(self, number: usize, sql: &mut String) {
        match self {
            Dialect::Sqlite => sql.push('?'),
            Dialect::Postgres => {
                sql.push('$');
                sql.push_str(&number.to_string());
            }
        }
    }

    /// Ends the subquery that picks due rows to claim: on PostgreSQL the rows are locked and
    /// rows another claimer holds are passed over, so concurrent claimers (tasks or nodes)
    /// never take the same job. SQLite has one writer at a time, so it needs nothing.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The `FROM` clause that gives, for each row of the CTE `portals` (`member_id`), that
    /// portal's oldest `$2` jobs due at `$1` as `own` (`id`, `member_id`, `next_run_at`), read
    /// from `jobs_run_due_by_member`. PostgreSQL: a `LATERAL` subquery, run once per portal (a
    /// join on `IN (correlated subquery)` runs it once per job row there: 250 ms for 1,800
    /// jobs). SQLite has no `LATERAL`; it runs the correlated `IN` once per portal and looks
    /// the rows up by id.
    pub(crate) fn due_of_each_portal(self) -> &'static str {
        match self {
            Dialect::Sqlite => {
                "FROM portals JOIN jobs AS own ON own.id IN (SELECT id FROM jobs \
                 WHERE jobs.member_id = portals.member_id \
                 AND jobs.state IN ('queued', 'retry_wait', 'running') AND jobs.next_run_at <= $1 \
                 ORDER BY jobs.next_run_at, jobs.id LIMIT $2)"
            }
            Dialect::Postgres => {
                "FROM portals CROSS JOIN LATERAL (SELECT id, member_id, next_run_at FROM jobs \
                 WHERE jobs.member_id = portals.member_id \
                 AND jobs.state IN ('queued', 'retry_wait', 'running') AND jobs.next_run_at <= $1 \
                 ORDER BY jobs.next_run_at, jobs.id LIMIT $2) AS own"
            }
        }
    }

    /// Ends a `SELECT` of a row the transaction goes on to change: on PostgreSQL the row is
    /// locked until the commit. SQLite's write transaction holds the whole database already.
    pub(crate) fn lock_row(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// A statement that holds portal `$1`'s progress-line lock until the transaction ends, so
    /// claimers of one portal's lines take turns (PostgreSQL: an advisory lock). SQLite's write
    /// transaction is already the only one.
    pub(crate) fn lock_portal_progress(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => {
                Some("SELECT pg_advisory_xact_lock(hashtext('b24act.progress:' || $1))")
            }
        }
    }

    /// The database's own clock, now, in Unix milliseconds (a `DOUBLE PRECISION`): what nodes
    /// that share a request budget measure time by, so their own clocks' drift does not count.
    pub(crate) fn clock_ms(self) -> &'static str {
        match self {
            Dialect::Sqlite => "((julianday('now') - 2440587.5) * 86400000.0)",
            Dialect::Postgres => {
                "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000.0)::DOUBLE PRECISION"
            }
        }
    }

    /// The embedded migrations, in order: `(version, description, SQL)`. The two files are
    /// kept in step by hand (same tables, columns and meanings, each dialect's types).
    pub(crate) fn migrations(self) -> &'static [(i64, &'static str, &'static str)] {
        match self {
            Dialect::Sqlite => &[
                (
                    1,
                    "jobs attempts installations",
                    include_str!("../migrations/sqlite/0001_init.sql"),
                ),
                (2, "several nodes", include_str!("../migrations/sqlite/0002_several_nodes.sql")),
                (3, "operator", include_str!("../migrations/sqlite/0003_operator.sql")),
                (
                    4,
                    "action registrations",
                    include_str!("../migrations/sqlite/0004_action_registrations.sql"),
                ),
                (5, "console", include_str!("../migrations/sqlite/0005_console.sql")),
                (6, "language", include_str!("../migrations/sqlite/0006_language.sql")),
            ],
            Dialect::Postgres => &[
                (
                    1,
                    "jobs attempts installations",
                    include_str!("../migrations/postgres/0001_init.sql"),
                ),
                (2, "several nodes", include_str!("../migrations/postgres/0002_several_nodes.sql")),
                (3, "operator", include_str!("../migrations/postgres/0003_operator.sql")),
                (
                    4,
                    "action registrations",
                    include_str!("../migrations/postgres/0004_action_registrations.sql"),
                ),
                (5, "console", include_str!("../migrations/postgres/0005_console.sql")),
                (6, "language", include_str!("../migrations/postgres/0006_language.sql")),
            ],
        }
    }
}
