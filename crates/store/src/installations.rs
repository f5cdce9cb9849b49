//! Installations: one row per portal that installed the app, with its endpoints and tokens.
//! The application token and the OAuth tokens are encrypted at rest (see [`crate::cipher`]).

use std::fmt;

use sqlx::Row;

use crate::Store;
use crate::backend::{read, write_tx};
use crate::error::{Error, Result};

/// Whether the app is installed on a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallationStatus {
    Active,
    Uninstalled,
}

impl InstallationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallationStatus::Active => "active",
            InstallationStatus::Uninstalled => "uninstalled",
        }
    }

    fn decode(text: &str) -> Result<InstallationStatus> {
        match text {
            "active" => Ok(InstallationStatus::Active),
            "uninstalled" => Ok(InstallationStatus::Uninstalled),
            other => Err(Error::Corrupt { what: "installation status", value: other.to_owned() }),
        }
    }
}

/// What ONAPPINSTALL / ONAPPUPDATE tell us about a portal. `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct NewInstallation {
    pub member_id: String,
    pub domain: String,
    pub client_endpoint: String,
    pub server_endpoint: String,
    pub application_token: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix ms).
    pub expires_at: i64,
}

/// A stored installation, secrets decrypted. `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Installation {
    pub member_id: String,
    pub domain: String,
    pub client_endpoint: String,
    pub server_endpoint: String,
    pub application_token: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: i64,
    pub status: InstallationStatus,
    /// The first install, or the reinstall after an uninstall.
    pub installed_at: i64,
    pub updated_at: i64,
}

impl fmt::Debug for NewInstallation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewInstallation")
            .field("member_id", &self.member_id)
            .field("domain", &self.domain)
            .field("client_endpoint", &self.client_endpoint)
            .field("server_endpoint", &self.server_endpoint)
            .field("application_token", &"***")
            .field("access_token", &"***")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Debug for Installation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Installation")
            .field("member_id", &self.member_id)
            .field("domain", &self.domain)
            .field("client_endpoint", &self.client_endpoint)
            .field("server_endpoint", &self.server_endpoint)
            .field("application_token", &"***")
            .field("access_token", &"***")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .field("expires_at", &self.expires_at)
            .field("status", &self.status)
            .field("installed_at", &self.installed_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// The columns [`installation_from_row!`] reads, as a literal for `concat!`.
macro_rules! installation_columns {
    () => {
        "member_id, domain, client_endpoint, server_endpoint, application_token, access_token, \
         refresh_token, expires_at, status, installed_at, updated_at"
    };
}

/// Decodes an `installations` row selected with [`installation_columns!`] and decrypts its
/// secrets. Expands inside a body.
macro_rules! installation_from_row {
    ($cipher:expr, $row:expr) => {{
        let row = &$row;
        let member_id: String = row.try_get("member_id")?;
        let application_token: Vec<u8> = row.try_get("application_token")?;
        let access_token: Vec<u8> = row.try_get("access_token")?;
        let refresh_token: Option<Vec<u8>> = row.try_get("refresh_token")?;
        Installation {
            domain: row.try_get("domain")?,
            client_endpoint: row.try_get("client_endpoint")?,
            server_endpoint: row.try_get("server_endpoint")?,
            application_token: $cipher.open(&member_id, "application_token", &application_token)?,
            access_token: $cipher.open(&member_id, "access_token", &access_token)?,
            refresh_token: match refresh_token {
                Some(sealed) => Some($cipher.open(&member_id, "refresh_token", &sealed)?),
                None => None,
            },
            expires_at: row.try_get("expires_at")?,
            status: InstallationStatus::decode(row.try_get("status")?)?,
            installed_at: row.try_get("installed_at")?,
            updated_at: row.try_get("updated_at")?,
            member_id,
        }
    }};
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
        write_tx!(self, "store an installation", |tx, dialect| {
            sqlx::query(
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
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(())
        });
        Ok(())
    }

    /// The installation of portal `member_id`, whatever its status.
    pub async fn installation(&self, member_id: &str) -> Result<Option<Installation>> {
        Ok(read!(self, "read an installation", |pool, dialect| {
            let row = sqlx::query(concat!(
                "SELECT ",
                installation_columns!(),
                " FROM installations WHERE member_id = $1"
            ))
            .bind(member_id)
            .fetch_optional(pool)
            .await?;
            match row {
                Some(row) => Ok(Some(installation_from_row!(self.cipher, row))),
                None => Ok(None),
            }
        }))
    }

    /// Every installation, by `member_id`.
    pub async fn installations(&self) -> Result<Vec<Installation>> {
        Ok(read!(self, "list installations", |pool, dialect| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                installation_columns!(),
                " FROM installations ORDER BY member_id"
            ))
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(installation_from_row!(self.cipher, row));
            }
            Ok(out)
        }))
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
        let access = self.cipher.seal(member_id, "access_token", access_token)?;
        let refresh = self.cipher.seal(member_id, "refresh_token", refresh_token)?;
        Ok(write_tx!(self, "store refreshed tokens", |tx, dialect| {
            let changed = sqlx::query(
                "UPDATE installations SET access_token = $1, refresh_token = $2, \
                 expires_at = $3, updated_at = $4 WHERE member_id = $5",
            )
            .bind(access.as_slice())
            .bind(refresh.as_slice())
            .bind(expires_at)
            .bind(now)
            .bind(member_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            Ok(changed > 0)
        }))
    }

    /// ONAPPUNINSTALL: marks the portal uninstalled and stops its work — every job not yet
    /// finished goes `dead` ("portal uninstalled the app"), and a worker still running one of
    /// them loses its lease. Returns how many jobs were stopped, or `None` for an unknown portal.
    pub async fn mark_uninstalled(&self, member_id: &str, now: i64) -> Result<Option<u64>> {
        self.stop_portal(member_id, "the portal uninstalled the app", None, now).await
    }

    /// An operator's `portals remove`: as [`Store::mark_uninstalled`], and the portal's OAuth
    /// tokens are forgotten too, so nothing can call it until it installs the app again. Its
    /// jobs stay for inspection.
    pub async fn remove_installation(&self, member_id: &str, now: i64) -> Result<Option<u64>> {
        let forgotten = self.cipher.seal(member_id, "access_token", "")?;
        self.stop_portal(member_id, "an operator removed the portal", Some(forgotten), now).await
    }

    /// Marks a portal uninstalled (replacing its access token with `access_token` when given,
    /// and then forgetting its refresh token) and stops its unfinished jobs with `reason`.
    async fn stop_portal(
        &self,
        member_id: &str,
        reason: &str,
        access_token: Option<Vec<u8>>,
        now: i64,
    ) -> Result<Option<u64>> {
        Ok(write_tx!(self, "mark a portal uninstalled", |tx, dialect| {
            let changed = match &access_token {
                None => {
                    sqlx::query(
                        "UPDATE installations SET status = 'uninstalled', updated_at = $1 \
                         WHERE member_id = $2",
                    )
                    .bind(now)
                    .bind(member_id)
                    .execute(&mut *tx)
                    .await?
                }
                Some(sealed) => {
                    sqlx::query(
                        "UPDATE installations SET status = 'uninstalled', updated_at = $1, \
                         access_token = $2, refresh_token = NULL WHERE member_id = $3",
                    )
                    .bind(now)
                    .bind(sealed.as_slice())
                    .bind(member_id)
                    .execute(&mut *tx)
                    .await?
                }
            }
            .rows_affected();
            if changed == 0 {
                return Ok(None);
            }
            // Open attempts only exist on unfinished jobs: close them all first.
            sqlx::query(
                "UPDATE attempts SET finished_at = $1, outcome = 'cancelled', error = $2 \
                 WHERE finished_at IS NULL AND job_id IN (SELECT id FROM jobs WHERE member_id = $3 \
                 AND state IN ('queued', 'running', 'retry_wait', 'delivering'))",
            )
            .bind(now)
            .bind(reason)
            .bind(member_id)
            .execute(&mut *tx)
            .await?;
            let stopped = sqlx::query(
                "UPDATE jobs SET state = 'dead', dead_reason = $1, next_run_at = NULL, \
                 next_delivery_at = NULL, lease_owner = NULL, lease_until = NULL, \
                 updated_at = $2 \
                 WHERE member_id = $3 AND state IN ('queued', 'running', 'retry_wait', 'delivering')",
            )
            .bind(reason)
            .bind(now)
            .bind(member_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            Ok(Some(stopped))
        }))
    }
}
