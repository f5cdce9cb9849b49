//! Running SQL on either database with one piece of code: a [`Statement`] (text plus typed
//! parameters) runs on a [`Conn`], rows come back as [`Record`]s, and [`Store::write`] /
//! [`Store::read`] hand an operation a connection inside a transaction or from the read pool.
//!
//! sqlx gives each database its own connection, row and argument types, and generic code over
//! `sqlx::Database` would have to repeat every `Encode`/`Decode` bound in every function that
//! touches a query. Here the types meet the driver in one place each: parameters are bound by
//! [`bound`], rows read by [`Record::get`], and a `Conn` method runs a statement on whichever
//! connection it holds. Queries are checked at run time (sqlx's compile-time macros check one
//! database only); what the dialects say differently comes from [`Dialect`].

use std::borrow::Cow;

use serde_json::Value;
use sqlx::postgres::{PgConnection, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnection, SqliteRow};
use sqlx::{Database, Decode, Encode, Row, Type};

use crate::Store;
use crate::connect::Db;
use crate::dialect::Dialect;
use crate::error::{Error, Result, db};
use crate::model::{JobId, Stored};

/// A value bound to a statement parameter, in one of the column types the store uses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Int(i64),
    OptionalInt(Option<i64>),
    /// `INTEGER` on PostgreSQL: counts and attempt numbers, the payload version.
    Int32(i32),
    /// `DOUBLE PRECISION`: the request budgets' times.
    Float(f64),
    Bool(bool),
    Text(&'a str),
    OptionalText(Option<&'a str>),
    Bytes(&'a [u8]),
    OptionalBytes(Option<&'a [u8]>),
}

impl From<i64> for Param<'_> {
    fn from(value: i64) -> Self {
        Param::Int(value)
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(value: Option<i64>) -> Self {
        Param::OptionalInt(value)
    }
}

impl From<i32> for Param<'_> {
    fn from(value: i32) -> Self {
        Param::Int32(value)
    }
}

impl From<f64> for Param<'_> {
    fn from(value: f64) -> Self {
        Param::Float(value)
    }
}

impl From<bool> for Param<'_> {
    fn from(value: bool) -> Self {
        Param::Bool(value)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(value: &'a str) -> Self {
        Param::Text(value)
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Param::OptionalText(value)
    }
}

impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(value: &'a [u8]) -> Self {
        Param::Bytes(value)
    }
}

impl<'a> From<Option<&'a [u8]>> for Param<'a> {
    fn from(value: Option<&'a [u8]>) -> Self {
        Param::OptionalBytes(value)
    }
}

impl From<JobId> for Param<'_> {
    fn from(id: JobId) -> Self {
        Param::Int(id.0)
    }
}

/// SQL text and its parameters. Either the text names its parameters `$1`, `$2`, … itself
/// ([`Statement::new`] and [`Statement::bind`]), or every parameter gets its placeholder from
/// [`Statement::push_bind`], written in the dialect's form when the statement runs — never
/// both, since SQLite's `?` counts by position. The text is put together from `&'static str`
/// pieces and placeholders only, so no value can reach it.
#[derive(Debug)]
pub(crate) struct Statement<'a> {
    sql: Cow<'static, str>,
    /// Where in `sql` each [`Statement::push_bind`] placeholder goes, in order.
    placeholders: Vec<usize>,
    params: Vec<Param<'a>>,
}

impl<'a> Statement<'a> {
    /// A statement starting with `sql`.
    pub(crate) fn new(sql: &'static str) -> Statement<'a> {
        Statement { sql: Cow::Borrowed(sql), placeholders: Vec::new(), params: Vec::new() }
    }

    /// Adds the value of the next parameter the text names (`$1`, `$2`, … in order).
    pub(crate) fn bind(mut self, value: impl Into<Param<'a>>) -> Statement<'a> {
        self.params.push(value.into());
        self
    }

    /// Appends `sql` to the text.
    pub(crate) fn push(mut self, sql: &'static str) -> Statement<'a> {
        self.sql.to_mut().push_str(sql);
        self
    }

    /// Appends a placeholder for `value`.
    pub(crate) fn push_bind(mut self, value: impl Into<Param<'a>>) -> Statement<'a> {
        self.place_all([value.into()]);
        self
    }

    /// Appends `?, ?, …`, one placeholder per value (for `IN (…)`).
    pub(crate) fn push_list<P: Into<Param<'a>>>(
        mut self,
        values: impl IntoIterator<Item = P>,
    ) -> Statement<'a> {
        self.place_all(values.into_iter().map(Into::into));
        self
    }

    /// Appends `VALUES (?, ?), (?, ?), …`: one tuple per row, its values from `columns`.
    pub(crate) fn push_values<T, const N: usize>(
        mut self,
        rows: impl IntoIterator<Item = T>,
        mut columns: impl FnMut(T) -> [Param<'a>; N],
    ) -> Statement<'a> {
        self.sql.to_mut().push_str("VALUES ");
        for (index, row) in rows.into_iter().enumerate() {
            self.sql.to_mut().push_str(if index == 0 { "(" } else { ", (" });
            self.place_all(columns(row));
            self.sql.to_mut().push(')');
        }
        self
    }

    /// Appends a placeholder for each of `values`, separated by commas.
    fn place_all(&mut self, values: impl IntoIterator<Item = Param<'a>>) {
        let sql = self.sql.to_mut();
        for (index, value) in values.into_iter().enumerate() {
            if index > 0 {
                sql.push_str(", ");
            }
            self.placeholders.push(sql.len());
            self.params.push(value);
        }
    }

    /// The text in `dialect`, its placeholders written in, and the parameters.
    fn written(self, dialect: Dialect) -> (Cow<'static, str>, Vec<Param<'a>>) {
        if self.placeholders.is_empty() {
            return (self.sql, self.params);
        }
        debug_assert_eq!(
            self.placeholders.len(),
            self.params.len(),
            "a statement names its parameters itself or has push_bind place them all"
        );
        let mut sql = String::with_capacity(self.sql.len() + 6 * self.placeholders.len());
        let mut from = 0;
        for (index, &at) in self.placeholders.iter().enumerate() {
            sql.push_str(&self.sql[from..at]);
            dialect.placeholder(index + 1, &mut sql);
            from = at;
        }
        sql.push_str(&self.sql[from..]);
        (Cow::Owned(sql), self.params)
    }
}

/// `statement` as a sqlx query for database `DB`, in `dialect`. The one function that knows how
/// each [`Param`] is encoded; it is only called for SQLite and PostgreSQL, which encode them all.
fn bound<'a, DB>(
    statement: Statement<'a>,
    dialect: Dialect,
) -> sqlx::query::Query<'a, DB, DB::Arguments>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
    Option<i64>: Encode<'a, DB> + Type<DB>,
    i32: Encode<'a, DB> + Type<DB>,
    f64: Encode<'a, DB> + Type<DB>,
    bool: Encode<'a, DB> + Type<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
    Option<&'a str>: Encode<'a, DB> + Type<DB>,
    &'a [u8]: Encode<'a, DB> + Type<DB>,
    Option<&'a [u8]>: Encode<'a, DB> + Type<DB>,
{
    let (sql, params) = statement.written(dialect);
    // The text is made of `&'static str` pieces and placeholders only (see `Statement`).
    let query = sqlx::query(sqlx::AssertSqlSafe(sql));
    params.into_iter().fold(query, |query, param| match param {
        Param::Int(value) => query.bind(value),
        Param::OptionalInt(value) => query.bind(value),
        Param::Int32(value) => query.bind(value),
        Param::Float(value) => query.bind(value),
        Param::Bool(value) => query.bind(value),
        Param::Text(value) => query.bind(value),
        Param::OptionalText(value) => query.bind(value),
        Param::Bytes(value) => query.bind(value),
        Param::OptionalBytes(value) => query.bind(value),
    })
}

/// A row a statement returned.
pub(crate) enum Record {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Record {
    /// The value of `column`, as any type both databases decode.
    pub(crate) fn get<'r, T>(&'r self, column: &str) -> Result<T, sqlx::Error>
    where
        T: Decode<'r, Sqlite> + Type<Sqlite> + Decode<'r, Postgres> + Type<Postgres>,
    {
        match self {
            Record::Sqlite(row) => row.try_get(column),
            Record::Postgres(row) => row.try_get(column),
        }
    }
}

/// A connection an operation runs its statements on: inside a write transaction, or taken from
/// the read pool.
pub(crate) enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Conn<'_> {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs `statement`; returns how many rows it changed.
    pub(crate) async fn execute(&mut self, statement: Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Conn::Sqlite(conn) => {
                bound(statement, Dialect::Sqlite).execute(&mut **conn).await?.rows_affected()
            }
            Conn::Postgres(conn) => {
                bound(statement, Dialect::Postgres).execute(&mut **conn).await?.rows_affected()
            }
        })
    }

    /// Every row `statement` returns.
    pub(crate) async fn fetch_all(
        &mut self,
        statement: Statement<'_>,
    ) -> Result<Vec<Record>, sqlx::Error> {
        Ok(match self {
            Conn::Sqlite(conn) => {
                let rows = bound(statement, Dialect::Sqlite).fetch_all(&mut **conn).await?;
                rows.into_iter().map(Record::Sqlite).collect()
            }
            Conn::Postgres(conn) => {
                let rows = bound(statement, Dialect::Postgres).fetch_all(&mut **conn).await?;
                rows.into_iter().map(Record::Postgres).collect()
            }
        })
    }

    /// The row `statement` returns, if any: for statements that return at most one.
    pub(crate) async fn fetch_optional(
        &mut self,
        statement: Statement<'_>,
    ) -> Result<Option<Record>, sqlx::Error> {
        Ok(self.fetch_all(statement).await?.into_iter().next())
    }
}

/// An error inside an operation: a driver error (named by the operation when it is reported)
/// or a store error raised by the operation itself.
pub(crate) enum Failure {
    Sql(sqlx::Error),
    Store(Error),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Failure {
        Failure::Sql(error)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Store(error)
    }
}

impl Failure {
    fn into_error(self, operation: &'static str) -> Error {
        match self {
            Failure::Sql(source) => Error::Database { operation, source },
            Failure::Store(error) => error,
        }
    }
}

impl Store {
    /// Runs `body` in one write transaction and commits it; an error rolls it back. Errors name
    /// `operation`. SQLite has a single writer connection, so writes queue here.
    pub(crate) async fn write<T>(
        &self,
        operation: &'static str,
        body: impl AsyncFnOnce(&mut Conn<'_>) -> Result<T, Failure>,
    ) -> Result<T> {
        match &self.db {
            Db::Sqlite { writer, .. } => {
                let begin = Dialect::Sqlite.begin_write();
                let mut tx = writer.begin_with(begin).await.map_err(db(operation))?;
                let out = body(&mut Conn::Sqlite(&mut tx)).await;
                commit_if_ok(tx, out, operation).await
            }
            Db::Postgres(pool) => {
                let begin = Dialect::Postgres.begin_write();
                let mut tx = pool.begin_with(begin).await.map_err(db(operation))?;
                let out = body(&mut Conn::Postgres(&mut tx)).await;
                commit_if_ok(tx, out, operation).await
            }
        }
    }

    /// Runs one statement in its own write transaction; returns how many rows it changed.
    pub(crate) async fn write_one(
        &self,
        operation: &'static str,
        statement: Statement<'_>,
    ) -> Result<u64> {
        self.write(operation, async |conn| Ok(conn.execute(statement).await?)).await
    }

    /// Runs `body` on a connection from the read pool (SQLite: the read-only connections).
    /// Errors name `operation`.
    pub(crate) async fn read<T>(
        &self,
        operation: &'static str,
        body: impl AsyncFnOnce(&mut Conn<'_>) -> Result<T, Failure>,
    ) -> Result<T> {
        let out = match &self.db {
            Db::Sqlite { reader, .. } => {
                let mut conn = reader.acquire().await.map_err(db(operation))?;
                body(&mut Conn::Sqlite(&mut conn)).await
            }
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(db(operation))?;
                body(&mut Conn::Postgres(&mut conn)).await
            }
        };
        out.map_err(|failure| failure.into_error(operation))
    }
}

/// Commits `tx` when the operation that ran in it succeeded with `out`; otherwise rolls it back
/// before returning. Not by dropping it: sqlx then only queues the `ROLLBACK` on the connection,
/// which goes back to the pool still holding the transaction's row locks until its next use —
/// and every `FOR UPDATE SKIP LOCKED` claim meanwhile passes those rows over (on PostgreSQL, a
/// refused operator action left its job unclaimable by the outbox; a flaky test found it).
async fn commit_if_ok<DB: Database, T>(
    tx: sqlx::Transaction<'static, DB>,
    out: Result<T, Failure>,
    operation: &'static str,
) -> Result<T> {
    match out {
        Ok(out) => {
            tx.commit().await.map_err(db(operation))?;
            Ok(out)
        }
        Err(failure) => {
            if let Err(error) = tx.rollback().await {
                tracing::warn!(operation, error = %error, "rolling back a failed write failed");
            }
            Err(failure.into_error(operation))
        }
    }
}

/// The value of a [`Stored`] vocabulary stored as `text`.
pub(crate) fn decode<T: Stored>(text: &str) -> Result<T> {
    T::EVERY
        .iter()
        .copied()
        .find(|value| value.stored() == text)
        .ok_or_else(|| Error::Corrupt { what: T::WHAT, value: text.to_owned() })
}

/// A stored count (attempts, attempt numbers) as `u32`.
pub(crate) fn count(stored: i32) -> Result<u32> {
    u32::try_from(stored).map_err(|_| Error::Corrupt { what: "count", value: stored.to_string() })
}

/// Parses stored JSON, naming the job and field when it does not parse.
pub(crate) fn parse_json(job_id: JobId, field: &'static str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|source| Error::Json { job_id, field, source })
}

/// Serializes a JSON value for storage, naming what it belongs to when it cannot be.
pub(crate) fn to_json(
    subject: impl FnOnce() -> String,
    field: &'static str,
    value: &Value,
) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Serialize {
        subject: subject(),
        field,
        source,
    })
}
