//! What the nodes sharing one database coordinate through it: each portal's request budget
//! (a leaky bucket kept as one row, GCRA-style), the one refresh of a portal's tokens at a time
//! ([`TokenLock`]), the fingerprint of the registrations made on each portal and of each
//! action's there, and the wake-ups one node sends the others (PostgreSQL `NOTIFY`). On SQLite
//! there is one node: the budget works the same (the host keeps its in-process limiter there), a
//! token lock is a lock in this process, and there is nobody to wake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::Postgres;
use sqlx::postgres::PgListener;

use crate::Store;
use crate::connect::Db;
use crate::error::{Error, Result, db};
use crate::model::InstallationStatus;
use crate::sql::{Conn, Statement, decode};

/// The channel nodes `NOTIFY` when a job is queued or a result stored (PostgreSQL).
pub const WAKE_CHANNEL: &str = "b24act_wake";

/// What a wake-up says: new work to run, or new results to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Jobs,
    Results,
}

impl Wake {
    fn word(self) -> &'static str {
        match self {
            Wake::Jobs => "jobs",
            Wake::Results => "results",
        }
    }
}

/// A wake-up another node (or this one) sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeUp {
    pub wake: Wake,
    /// The node that sent it, as it named itself.
    pub from: String,
}

/// A portal's tokens as stored, decrypted.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: i64,
}

impl std::fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTokens").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// A portal's stored tokens, held so no other node (or task) refreshes them until this one has
/// saved the new ones or let go ([`Store::lock_tokens`]). Dropping it lets go unchanged.
pub struct TokenLock<'s> {
    store: &'s Store,
    member_id: String,
    tokens: Option<StoredTokens>,
    hold: Hold,
}

/// What keeps other refreshers out while a [`TokenLock`] lives.
enum Hold {
    /// A transaction holding the installation's row lock (`SELECT … FOR UPDATE`).
    Postgres(sqlx::Transaction<'static, Postgres>),
    /// One node: a lock per portal in this process.
    Local(tokio::sync::OwnedMutexGuard<()>),
}

/// The per-portal token locks of a store on SQLite.
#[derive(Debug, Default)]
pub(crate) struct LocalTokenLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl LocalTokenLocks {
    async fn lock(&self, member_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.entry(member_id.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// Selects the columns [`TokenLock`] reads for one installation (`$1`).
const SELECT_TOKENS: &str = "SELECT access_token, refresh_token, expires_at, status \
     FROM installations WHERE member_id = $1";

impl TokenLock<'_> {
    /// The tokens stored when the lock was taken; `None` when the portal is not installed (or
    /// uninstalled the app).
    pub fn tokens(&self) -> Option<&StoredTokens> {
        self.tokens.as_ref()
    }

    /// Stores the tokens a refresh returned and lets go. Bitrix24 rotates the refresh token on
    /// every refresh, so the new one replaces the old.
    pub async fn save(
        self,
        access_token: &str,
        refresh_token: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<()> {
        let sealed = self.store.seal_tokens(
            &self.member_id,
            access_token,
            refresh_token,
            expires_at,
            now,
        )?;
        let update = sealed.update();
        let operation = "store refreshed tokens";
        match self.hold {
            Hold::Postgres(mut tx) => {
                Conn::Postgres(&mut tx).execute(update).await.map_err(db(operation))?;
                tx.commit().await.map_err(db(operation))
            }
            Hold::Local(_guard) => self.store.write_one(operation, update).await.map(drop),
        }
    }
}

impl Store {
    /// Takes portal `member_id`'s token lock and reads its stored tokens. While the lock is
    /// held, no other holder of it — a task of this node or, on PostgreSQL, any node — can
    /// take it: a refresh that re-reads the tokens under it and finds them changed knows another
    /// refresh won and takes its tokens instead of spending the rotated refresh token again.
    pub async fn lock_tokens(&self, member_id: &str) -> Result<TokenLock<'_>> {
        let operation = "lock a portal's tokens";
        let select = Statement::new(SELECT_TOKENS).bind(member_id);
        let (row, hold) = match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(db(operation))?;
                let select = select.push(" FOR UPDATE");
                let row =
                    Conn::Postgres(&mut tx).fetch_optional(select).await.map_err(db(operation))?;
                (row, Hold::Postgres(tx))
            }
            Db::Sqlite { .. } => {
                let guard = self.token_locks.lock(member_id).await;
                let row =
                    self.read(operation, async |conn| Ok(conn.fetch_optional(select).await?));
                (row.await?, Hold::Local(guard))
            }
        };
        let tokens = match row {
            None => None,
            Some(row) => {
                let status: InstallationStatus =
                    decode(row.get::<&str>("status").map_err(db(operation))?)?;
                let sealed_access: &[u8] = row.get("access_token").map_err(db(operation))?;
                let sealed_refresh: Option<&[u8]> =
                    row.get("refresh_token").map_err(db(operation))?;
                let expires_at: i64 = row.get("expires_at").map_err(db(operation))?;
                (status == InstallationStatus::Active)
                    .then(|| -> Result<StoredTokens> {
                        Ok(StoredTokens {
                            access_token: self.cipher.open(
                                member_id,
                                "access_token",
                                sealed_access,
                            )?,
                            refresh_token: sealed_refresh
                                .map(|sealed| self.cipher.open(member_id, "refresh_token", sealed))
                                .transpose()?,
                            expires_at,
                        })
                    })
                    .transpose()?
            }
        };
        Ok(TokenLock { store: self, member_id: member_id.to_owned(), tokens, hold })
    }

    /// Takes one request from `portal`'s shared budget, a leaky bucket that drains one request
    /// every `interval_ms` and holds `capacity` requests, and returns how long (ms) to wait
    /// before sending it: the request's place in the drain, reserved now, so nodes asking at
    /// once are spaced out instead of racing. Time is the database's clock. A portal seen for
    /// the first time starts full (another client, or this host before a restart, may have
    /// filled the portal's own bucket), so its first request waits one interval.
    pub async fn reserve_request(
        &self,
        portal: &str,
        interval_ms: f64,
        capacity: f64,
    ) -> Result<f64> {
        let clock = self.dialect().clock_ms();
        let reserve = Statement::new("INSERT INTO portal_budgets (portal, empty_at) VALUES ($1, ")
            .push(clock)
            .push(
                " + ($3 + 1) * $2) ON CONFLICT (portal) DO UPDATE SET empty_at = \
             CASE WHEN portal_budgets.empty_at > ",
            )
            .push(clock)
            .push(" THEN portal_budgets.empty_at ELSE ")
            .push(clock)
            .push(" END + $2 RETURNING empty_at - $3 * $2 - ")
            .push(clock)
            .push(" AS wait_ms")
            .bind(portal)
            .bind(interval_ms)
            .bind(capacity);
        self.write("take from a portal's request budget", async |conn| {
            let row = conn.fetch_optional(reserve).await?;
            let wait: f64 = match row {
                Some(row) => row.get("wait_ms")?,
                None => 0.0,
            };
            Ok(wait.max(0.0))
        })
        .await
    }

    /// Takes `portal`'s shared budget as full as of now: the portal said so
    /// (`QUERY_LIMIT_EXCEEDED`), whatever the nodes counted. Requests already given a later
    /// place keep it.
    pub async fn fill_budget(&self, portal: &str, interval_ms: f64, capacity: f64) -> Result<()> {
        let clock = self.dialect().clock_ms();
        let fill = Statement::new("INSERT INTO portal_budgets (portal, empty_at) VALUES ($1, ")
            .push(clock)
            .push(
                " + $3 * $2) ON CONFLICT (portal) DO UPDATE SET empty_at = \
                 CASE WHEN portal_budgets.empty_at > excluded.empty_at \
                 THEN portal_budgets.empty_at ELSE excluded.empty_at END",
            )
            .bind(portal)
            .bind(interval_ms)
            .bind(capacity);
        self.write_one("fill a portal's request budget", fill).await.map(drop)
    }

    /// Records the fingerprint of the registrations just made on portal `member_id`.
    pub async fn set_registrations(&self, member_id: &str, fingerprint: &str) -> Result<()> {
        self.set_installation_note(member_id, InstallationNote::Registrations, fingerprint).await
    }

    /// The fingerprint of the registrations last made on portal `member_id`, if any.
    pub async fn registrations(&self, member_id: &str) -> Result<Option<String>> {
        self.installation_note(member_id, InstallationNote::Registrations).await
    }

    /// Records portal `member_id`'s language (`data[LANGUAGE_ID]` of its install or update
    /// event), which the workflow-log lines b24act writes itself are in.
    pub async fn set_installation_language(&self, member_id: &str, language: &str) -> Result<()> {
        self.set_installation_note(member_id, InstallationNote::Language, language).await
    }

    /// Portal `member_id`'s language, if an install or update event gave one.
    pub async fn installation_language(&self, member_id: &str) -> Result<Option<String>> {
        self.installation_note(member_id, InstallationNote::Language).await
    }

    async fn set_installation_note(
        &self,
        member_id: &str,
        note: InstallationNote,
        value: &str,
    ) -> Result<()> {
        let update = Statement::new("UPDATE installations SET ")
            .push(note.column())
            .push(" = $1 WHERE member_id = $2")
            .bind(value)
            .bind(member_id);
        self.write_one(note.writing(), update).await.map(drop)
    }

    async fn installation_note(
        &self,
        member_id: &str,
        note: InstallationNote,
    ) -> Result<Option<String>> {
        let select = Statement::new("SELECT ")
            .push(note.column())
            .push(" AS note FROM installations WHERE member_id = $1")
            .bind(member_id);
        self.read(note.reading(), async |conn| {
            Ok(conn.fetch_optional(select).await?.map(|row| row.get("note")).transpose()?.flatten())
        })
        .await
    }

    /// Records the fingerprint action `code` was just registered with on portal `member_id`,
    /// or, given `None`, that its registration there was deleted.
    pub async fn set_action_registration(
        &self,
        member_id: &str,
        code: &str,
        fingerprint: Option<&str>,
    ) -> Result<()> {
        let statement = match fingerprint {
            Some(fingerprint) => Statement::new(
                "INSERT INTO action_registrations (member_id, code, fingerprint) \
                 VALUES ($1, $2, $3) \
                 ON CONFLICT (member_id, code) DO UPDATE SET fingerprint = excluded.fingerprint",
            )
            .bind(member_id)
            .bind(code)
            .bind(fingerprint),
            None => Statement::new(
                "DELETE FROM action_registrations WHERE member_id = $1 AND code = $2",
            )
            .bind(member_id)
            .bind(code),
        };
        self.write_one("record an action's registration", statement).await.map(drop)
    }

    /// The fingerprint each action was last registered with on portal `member_id`, by code.
    pub async fn action_registrations(&self, member_id: &str) -> Result<HashMap<String, String>> {
        let select = Statement::new(
            "SELECT code, fingerprint FROM action_registrations WHERE member_id = $1",
        )
        .bind(member_id);
        self.read("read a portal's action registrations", async |conn| {
            let rows = conn.fetch_all(select).await?;
            Ok(rows
                .iter()
                .map(|row| Ok((row.get("code")?, row.get("fingerprint")?)))
                .collect::<Result<_, sqlx::Error>>()?)
        })
        .await
    }

    /// Tells the other nodes (PostgreSQL) that there is work of `wake`'s kind, from node
    /// `from`; nothing on SQLite, where the only node already knows.
    pub async fn wake_others(&self, wake: Wake, from: &str) -> Result<()> {
        let Db::Postgres(pool) = &self.db else { return Ok(()) };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WAKE_CHANNEL)
            .bind(format!("{} {from}", wake.word()))
            .execute(pool)
            .await
            .map_err(db("wake the other nodes"))?;
        Ok(())
    }

    /// Listens for the other nodes' wake-ups (PostgreSQL); `None` on SQLite. Pass the listener
    /// to [`next_wake`].
    pub async fn listen(&self) -> Result<Option<PgListener>> {
        let Db::Postgres(pool) = &self.db else { return Ok(None) };
        let mut listener =
            PgListener::connect_with(pool).await.map_err(db("listen for wake-ups"))?;
        listener.listen(WAKE_CHANNEL).await.map_err(db("listen for wake-ups"))?;
        Ok(Some(listener))
    }
}

/// The next wake-up another node sent; reconnects by itself after a lost connection (wake-ups
/// sent meanwhile are lost, which only delays work until the next poll).
pub async fn next_wake(listener: &mut PgListener) -> Result<WakeUp> {
    let notification = listener.recv().await.map_err(db("receive a wake-up"))?;
    let (word, from) =
        notification.payload().split_once(' ').unwrap_or((notification.payload(), ""));
    let wake = match word {
        "jobs" => Wake::Jobs,
        "results" => Wake::Results,
        other => {
            let value = other.chars().take(64).collect();
            return Err(Error::Corrupt { what: "wake-up", value });
        }
    };
    Ok(WakeUp { wake, from: from.to_owned() })
}

/// A column of `installations` that is a note about the portal rather than its identity: kept
/// apart from what an install event replaces.
#[derive(Debug, Clone, Copy)]
enum InstallationNote {
    /// The fingerprint of the registrations last made there.
    Registrations,
    /// Its language.
    Language,
}

impl InstallationNote {
    fn column(self) -> &'static str {
        match self {
            InstallationNote::Registrations => "registrations",
            InstallationNote::Language => "language_id",
        }
    }

    fn writing(self) -> &'static str {
        match self {
            InstallationNote::Registrations => "record a portal's registrations",
            InstallationNote::Language => "record a portal's language",
        }
    }

    fn reading(self) -> &'static str {
        match self {
            InstallationNote::Registrations => "read a portal's registrations",
            InstallationNote::Language => "read a portal's language",
        }
    }
}
