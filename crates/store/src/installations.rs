//! Installations: one row per portal that installed the app, with its endpoints and tokens.
//! The application token and the OAuth tokens are encrypted at rest (see [`crate::cipher`]).

use crate::Store;
use crate::cipher::Cipher;
use crate::error::Result;
use crate::jobs::stop_jobs;
use crate::model::{Installation, NewInstallation};
use crate::sql::{Failure, Record, Statement, decode};

/// Selects every column [`installation_from`] reads; a `WHERE` or `ORDER BY` follows.
const SELECT_INSTALLATIONS: &str = "SELECT member_id, domain, client_endpoint, server_endpoint, \
     application_token, access_token, refresh_token, expires_at, status, installed_at, \
     updated_at FROM installations";

/// Decodes an `installations` row selected with [`SELECT_INSTALLATIONS`] and decrypts its
/// secrets.
fn installation_from(cipher: &Cipher, row: &Record) -> Result<Installation, Failure> {
    let member_id: String = row.get("member_id")?;
    let refresh_token: Option<&[u8]> = row.get("refresh_token")?;
    let portal = NewInstallation {
        domain: row.get("domain")?,
        client_endpoint: row.get("client_endpoint")?,
        server_endpoint: row.get("server_endpoint")?,
        application_token: cipher.open(
            &member_id,
            "application_token",
            row.get("application_token")?,
        )?,
        access_token: cipher.open(&member_id, "access_token", row.get("access_token")?)?,
        refresh_token: refresh_token
            .map(|sealed| cipher.open(&member_id, "refresh_token", sealed))
            .transpose()?,
        expires_at: row.get("expires_at")?,
        member_id,
    };
    Ok(Installation {
        portal,
        status: decode(row.get("status")?)?,
        installed_at: row.get("installed_at")?,
        updated_at: row.get("updated_at")?,
    })
}

/// A refresh's tokens, encrypted ([`Store::seal_tokens`]).
pub(crate) struct SealedTokens<'a> {
    member_id: &'a str,
    access: Vec<u8>,
    refresh: Vec<u8>,
    expires_at: i64,
    now: i64,
}

impl SealedTokens<'_> {
    /// The `UPDATE` that stores them.
    pub(crate) fn update(&self) -> Statement<'_> {
        Statement::new(
            "UPDATE installations SET access_token = $1, refresh_token = $2, \
             expires_at = $3, updated_at = $4 WHERE member_id = $5",
        )
        .bind(self.access.as_slice())
        .bind(self.refresh.as_slice())
        .bind(self.expires_at)
        .bind(self.now)
        .bind(self.member_id)
    }
}

impl Store {
    /// Records an install or an app update: inserts the portal, or replaces its endpoints and
    /// tokens and marks it active again. `installed_at` keeps the first install unless the
    /// portal had uninstalled the app.
    pub async fn upsert_installation(&self, install: &NewInstallation, now: i64) -> Result<()> {
        let member_id = install.member_id.as_str();
        let application_token =
            self.cipher.seal(member_id, "application_token", &install.application_token)?;
        let access_token = self.cipher.seal(member_id, "access_token", &install.access_token)?;
        let refresh_token = match &install.refresh_token {
            Some(token) => Some(self.cipher.seal(member_id, "refresh_token", token)?),
            None => None,
        };
        let upsert = Statement::new(
            "INSERT INTO installations (member_id, domain, client_endpoint, server_endpoint, \
             application_token, access_token, refresh_token, expires_at, status, \
             installed_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $9) \
             ON CONFLICT (member_id) DO UPDATE SET domain = excluded.domain, \
             client_endpoint = excluded.client_endpoint, \
             server_endpoint = excluded.server_endpoint, \
             application_token = excluded.application_token, \
             access_token = excluded.access_token, refresh_token = excluded.refresh_token, \
             expires_at = excluded.expires_at, \
             installed_at = CASE WHEN installations.status = 'uninstalled' \
             THEN excluded.installed_at ELSE installations.installed_at END, \
             status = 'active', updated_at = excluded.updated_at",
        )
        .bind(member_id)
        .bind(install.domain.as_str())
        .bind(install.client_endpoint.as_str())
        .bind(install.server_endpoint.as_str())
        .bind(application_token.as_slice())
        .bind(access_token.as_slice())
        .bind(refresh_token.as_deref())
        .bind(install.expires_at)
        .bind(now);
        self.write_one("store an installation", upsert).await.map(drop)
    }

    /// The installation of portal `member_id`, whatever its status.
    pub async fn installation(&self, member_id: &str) -> Result<Option<Installation>> {
        self.read("read an installation", async |conn| {
            let select =
                Statement::new(SELECT_INSTALLATIONS).push(" WHERE member_id = $1").bind(member_id);
            let row = conn.fetch_optional(select).await?;
            row.map(|row| installation_from(&self.cipher, &row)).transpose()
        })
        .await
    }

    /// Every installation, by `member_id`.
    pub async fn installations(&self) -> Result<Vec<Installation>> {
        self.read("list installations", async |conn| {
            let select = Statement::new(SELECT_INSTALLATIONS).push(" ORDER BY member_id");
            let rows = conn.fetch_all(select).await?;
            rows.iter().map(|row| installation_from(&self.cipher, row)).collect()
        })
        .await
    }

    /// Stores the tokens a refresh returned. Bitrix24 rotates the refresh token on every
    /// refresh, so the new one always replaces the old. Returns `false` for an unknown portal.
    pub async fn update_tokens(
        &self,
        member_id: &str,
        access_token: &str,
        refresh_token: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool> {
        let sealed = self.seal_tokens(member_id, access_token, refresh_token, expires_at, now)?;
        Ok(self.write_one("store refreshed tokens", sealed.update()).await? > 0)
    }

    /// A refresh's tokens encrypted for portal `member_id`, ready to be written.
    pub(crate) fn seal_tokens<'a>(
        &self,
        member_id: &'a str,
        access_token: &str,
        refresh_token: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<SealedTokens<'a>> {
        Ok(SealedTokens {
            member_id,
            access: self.cipher.seal(member_id, "access_token", access_token)?,
            refresh: self.cipher.seal(member_id, "refresh_token", refresh_token)?,
            expires_at,
            now,
        })
    }

    /// ONAPPUNINSTALL: marks the portal uninstalled and stops its work — every job not yet
    /// finished goes `dead` ("portal uninstalled the app"), and a worker still running one of
    /// them loses its lease. Returns how many jobs were stopped, or `None` for an unknown portal.
    pub async fn mark_uninstalled(&self, member_id: &str, now: i64) -> Result<Option<u64>> {
        let uninstall = Statement::new(
            "UPDATE installations SET status = 'uninstalled', updated_at = $1 \
             WHERE member_id = $2",
        )
        .bind(now)
        .bind(member_id);
        self.stop_portal(uninstall, member_id, "the portal uninstalled the app", now).await
    }

    /// An operator's `portals remove`: as [`Store::mark_uninstalled`], and the portal's OAuth
    /// tokens are forgotten too, so nothing can call it until it installs the app again. Its
    /// jobs stay for inspection.
    pub async fn remove_installation(&self, member_id: &str, now: i64) -> Result<Option<u64>> {
        let forgotten = self.cipher.seal(member_id, "access_token", "")?;
        let remove = Statement::new(
            "UPDATE installations SET status = 'uninstalled', updated_at = $1, \
             access_token = $2, refresh_token = NULL WHERE member_id = $3",
        )
        .bind(now)
        .bind(forgotten.as_slice())
        .bind(member_id);
        self.stop_portal(remove, member_id, "an operator removed the portal", now).await
    }

    /// Runs `uninstall`, an `UPDATE installations` marking portal `member_id` uninstalled, and
    /// when it found the portal stops the portal's unfinished jobs with `reason`.
    async fn stop_portal(
        &self,
        uninstall: Statement<'_>,
        member_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<u64>> {
        self.write("mark a portal uninstalled", async |conn| {
            if conn.execute(uninstall).await? == 0 {
                return Ok(None);
            }
            let unfinished =
                "member_id = $3 AND state IN ('queued', 'running', 'retry_wait', 'delivering')";
            Ok(Some(stop_jobs(conn, unfinished, member_id.into(), reason, now).await?))
        })
        .await
    }
}
