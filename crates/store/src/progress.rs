//! Workflow-log lines (`bizproc.activity.log`) waiting to be sent, stored with their job so a
//! restart loses none and any node sends them: a sender claims a portal's oldest lines under a
//! lease, and they are deleted once a batch carried them. One sender at a time holds a portal's
//! lines, so they reach the workflow log in the order they were written.

use std::time::Duration;

use crate::Store;
use crate::attempts::{CHUNK, lease_until};
use crate::error::Result;
use crate::model::JobId;
use crate::sql::Statement;

/// One stored line, claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    pub id: i64,
    /// The activity the line is for: its job's event token.
    pub event_token: String,
    pub message: String,
}

impl Store {
    /// Stores a line for job `job_id` of portal `member_id`.
    pub async fn add_progress_line(
        &self,
        job_id: JobId,
        member_id: &str,
        message: &str,
        now: i64,
    ) -> Result<()> {
        let insert = Statement::new(
            "INSERT INTO progress_lines (job_id, member_id, message, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(job_id)
        .bind(member_id)
        .bind(message)
        .bind(now);
        self.write_one("store a progress line", insert).await.map(drop)
    }

    /// Job `job_id`'s lines not yet sent, oldest first, at most `limit` of them, as
    /// `(created_at, message)` (sent lines are deleted, so these are the ones still to go).
    pub async fn pending_progress(&self, job_id: JobId, limit: u32) -> Result<Vec<(i64, String)>> {
        let select = Statement::new(
            "SELECT created_at, message FROM progress_lines WHERE job_id = $1 ORDER BY id LIMIT $2",
        )
        .bind(job_id)
        .bind(i64::from(limit));
        self.read("read a job's progress lines", async |conn| {
            let rows = conn.fetch_all(select).await?;
            rows.iter().map(|row| Ok((row.get("created_at")?, row.get("message")?))).collect()
        })
        .await
    }

    /// The portals with lines that no sender holds at `now`.
    pub async fn portals_with_progress(&self, now: i64) -> Result<Vec<String>> {
        let select = Statement::new(
            "SELECT DISTINCT member_id FROM progress_lines \
             WHERE claimed_until IS NULL OR claimed_until <= $1 ORDER BY member_id",
        )
        .bind(now);
        self.read("list portals with progress lines", async |conn| {
            let rows = conn.fetch_all(select).await?;
            Ok(rows.iter().map(|row| row.get("member_id")).collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Claims up to `max` of portal `member_id`'s lines, oldest first, held until `now + lease`
    /// (a sender that dies leaves them to be sent again then). Nothing while another sender
    /// holds some of the portal's lines: the next ones wait, so the order holds.
    pub async fn claim_progress(
        &self,
        member_id: &str,
        max: usize,
        now: i64,
        lease: Duration,
    ) -> Result<Vec<StoredLine>> {
        let Some(limit) = i64::try_from(max).ok().filter(|&limit| limit > 0) else {
            return Ok(Vec::new());
        };
        let until = lease_until(now, lease);
        self.write("claim progress lines", async |conn| {
            if let Some(serialize) = conn.dialect().lock_portal_progress() {
                conn.execute(Statement::new(serialize).bind(member_id)).await?;
            }
            let claim = Statement::new(
                "UPDATE progress_lines SET claimed_until = $3 WHERE id IN \
                 (SELECT id FROM progress_lines WHERE member_id = $1 \
                 AND (claimed_until IS NULL OR claimed_until <= $2) \
                 AND NOT EXISTS (SELECT 1 FROM progress_lines AS held \
                 WHERE held.member_id = $1 AND held.claimed_until > $2) \
                 ORDER BY id LIMIT $4) RETURNING id",
            )
            .bind(member_id)
            .bind(now)
            .bind(until)
            .bind(limit);
            let ids: Vec<i64> = conn
                .fetch_all(claim)
                .await?
                .iter()
                .map(|row| row.get("id"))
                .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let select = Statement::new(
                "SELECT progress_lines.id, jobs.event_token, progress_lines.message \
                 FROM progress_lines JOIN jobs ON jobs.id = progress_lines.job_id \
                 WHERE progress_lines.id IN (",
            )
            .push_list(ids.iter().copied())
            .push(") ORDER BY progress_lines.id");
            let rows = conn.fetch_all(select).await?;
            let lines = rows
                .iter()
                .map(|row| {
                    Ok(StoredLine {
                        id: row.get("id")?,
                        event_token: row.get("event_token")?,
                        message: row.get("message")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
            Ok(lines)
        })
        .await
    }

    /// Lines a batch carried (written, refused or lost with the request): deleted, never sent
    /// again.
    pub async fn progress_sent(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write("forget sent progress lines", async |conn| {
            for chunk in ids.chunks(CHUNK) {
                let delete = Statement::new("DELETE FROM progress_lines WHERE id IN (")
                    .push_list(chunk.iter().copied())
                    .push(")");
                conn.execute(delete).await?;
            }
            Ok(())
        })
        .await
    }
}
