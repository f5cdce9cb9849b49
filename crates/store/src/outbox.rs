//! The outbox: stored results waiting for `bizproc.event.send`, claimed in per-portal batches
//! under a lease, and the fenced transitions after a send.
//!
//! A `delivering` job is due when `next_delivery_at <= now`. Claiming it sets `next_delivery_at`
//! to the lease's expiry, so a sender that dies leaves the job due again once its lease runs out.
//! A delivered job is `done` and is never claimed again.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use sqlx::Row;

use crate::Store;
use crate::attempts::{AttemptKind, AttemptOutcome, CHUNK, open_attempts};
use crate::backend::{Dialect, millis, write_tx};
use crate::error::{Error, Result};
use crate::jobs::{Fenced, JobId, Lease, ResultKind, count, fenced_transition, parse_json};

/// The largest batch Bitrix24's `batch` method takes.
pub const MAX_BATCH: usize = 50;

/// One stored result to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: JobId,
    pub action_code: String,
    pub event_token: String,
    pub workflow_id: String,
    /// The stored result: send exactly this (it is never recomputed).
    pub result: Value,
    pub result_kind: ResultKind,
    /// This delivery attempt's number: 1 on the first send.
    pub attempt: u32,
    pub deadline_at: i64,
    pub lease: Lease,
}

/// The results due for one portal, at most `max_per_portal` of them (one `batch` call).
#[derive(Debug, Clone, PartialEq)]
pub struct PortalBatch {
    pub member_id: String,
    /// Oldest-due first.
    pub jobs: Vec<Delivery>,
}

macro_rules! claim_deliveries_sql {
    ($lock:literal) => {
        concat!(
            "WITH ranked AS (SELECT id, ROW_NUMBER() OVER ",
            "(PARTITION BY member_id ORDER BY next_delivery_at, id) AS position FROM jobs ",
            "WHERE state = 'delivering' AND next_delivery_at <= $1), ",
            "picked AS (SELECT id FROM jobs WHERE id IN ",
            "(SELECT id FROM ranked WHERE position <= $2) ",
            "AND state = 'delivering' AND next_delivery_at <= $1 ",
            $lock,
            ") UPDATE jobs SET delivery_attempts = delivery_attempts + 1, lease_owner = $3, ",
            "lease_until = $4, next_delivery_at = $4, updated_at = $1 ",
            "WHERE id IN (SELECT id FROM picked) ",
            "RETURNING id, member_id, action_code, event_token, workflow_id, result, result_kind, ",
            "delivery_attempts, deadline_at"
        )
    };
}

impl Store {
    /// Claims the results due for delivery, grouped by portal, at most `max_per_portal` per
    /// portal (capped at [`MAX_BATCH`]), each under a lease until `now + lease` with a `deliver`
    /// attempt opened. Portals come in `member_id` order.
    pub async fn claim_deliveries(
        &self,
        worker: &str,
        now: i64,
        lease: Duration,
        max_per_portal: usize,
    ) -> Result<Vec<PortalBatch>> {
        let until = now.saturating_add(millis(lease));
        let per_portal = i64::try_from(max_per_portal.min(MAX_BATCH)).unwrap_or(0);
        if per_portal == 0 {
            return Ok(Vec::new());
        }
        let mut claimed: Vec<(String, Delivery)> =
            write_tx!(self, "claim deliveries", |tx, dialect| {
                let sql = match dialect {
                    Dialect::Sqlite => claim_deliveries_sql!(""),
                    Dialect::Postgres => claim_deliveries_sql!("FOR UPDATE SKIP LOCKED"),
                };
                let rows = sqlx::query(sql)
                    .bind(now)
                    .bind(per_portal)
                    .bind(worker)
                    .bind(until)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut claimed = Vec::with_capacity(rows.len());
                let mut numbers: Vec<(JobId, i32)> = Vec::with_capacity(rows.len());
                for row in &rows {
                    let id = JobId(row.try_get("id")?);
                    let number: i32 = row.try_get("delivery_attempts")?;
                    let result: Option<&str> = row.try_get("result")?;
                    let kind: Option<&str> = row.try_get("result_kind")?;
                    let (Some(result), Some(kind)) = (result, kind) else {
                        return Err(Error::Corrupt {
                            what: "delivering job without a stored result",
                            value: id.to_string(),
                        }
                        .into());
                    };
                    numbers.push((id, number));
                    claimed.push((
                        row.try_get::<String, _>("member_id")?,
                        Delivery {
                            id,
                            action_code: row.try_get("action_code")?,
                            event_token: row.try_get("event_token")?,
                            workflow_id: row.try_get("workflow_id")?,
                            result: parse_json(id, "result", result)?,
                            result_kind: ResultKind::decode(kind)?,
                            attempt: count(number)?,
                            deadline_at: row.try_get("deadline_at")?,
                            lease: Lease {
                                job_id: id,
                                kind: AttemptKind::Deliver,
                                owner: worker.to_owned(),
                                number,
                                until,
                            },
                        },
                    ));
                }
                open_attempts!(tx, AttemptKind::Deliver, numbers, worker, now);
                Ok(claimed)
            });
        claimed.sort_by_key(|(_, delivery)| delivery.id);
        let mut portals: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
        for (member_id, delivery) in claimed {
            portals.entry(member_id).or_default().push(delivery);
        }
        Ok(portals.into_iter().map(|(member_id, jobs)| PortalBatch { member_id, jobs }).collect())
    }

    /// The portal accepted these results: the jobs are `done` and never sent again. Unfenced on
    /// purpose — once a result is known to be delivered, recording it is always right, even if
    /// the sender's lease ran out meanwhile. Returns how many jobs moved to `done`.
    pub async fn delivered(&self, jobs: &[JobId], now: i64) -> Result<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        Ok(write_tx!(self, "record deliveries", |tx, dialect| {
            let mut moved = 0;
            for chunk in jobs.chunks(CHUNK) {
                let mut attempts = sqlx::QueryBuilder::new("UPDATE attempts SET finished_at = ");
                attempts
                    .push_bind(now)
                    .push(", outcome = 'ok', error = NULL WHERE kind = 'deliver' AND finished_at IS NULL ")
                    .push("AND job_id IN (SELECT id FROM jobs WHERE state = 'delivering' AND id IN (");
                let mut ids = attempts.separated(", ");
                for id in chunk {
                    ids.push_bind(id.0);
                }
                attempts.push("))");
                attempts.build().execute(&mut *tx).await?;

                let mut update =
                    sqlx::QueryBuilder::new("UPDATE jobs SET state = 'done', delivered_at = ");
                update
                    .push_bind(now)
                    .push(", updated_at = ")
                    .push_bind(now)
                    .push(", next_delivery_at = NULL, lease_owner = NULL, lease_until = NULL ")
                    .push("WHERE state = 'delivering' AND id IN (");
                let mut ids = update.separated(", ");
                for id in chunk {
                    ids.push_bind(id.0);
                }
                update.push(")");
                moved += update.build().execute(&mut *tx).await?.rows_affected();
            }
            Ok(moved)
        }))
    }

    /// The send failed transiently (network, 5xx, 503/429, `"423"`, an expired token being
    /// refreshed): the result is sent again at `next_at`.
    pub async fn delivery_retry(
        &self,
        lease: &Lease,
        next_at: i64,
        outcome: AttemptOutcome,
        error: &str,
        now: i64,
    ) -> Result<Fenced> {
        Ok(fenced_transition!(
            self,
            "schedule a redelivery",
            lease,
            AttemptKind::Deliver,
            "UPDATE jobs SET next_delivery_at = $1, lease_owner = NULL, lease_until = NULL, \
             updated_at = $2 \
             WHERE id = $3 AND state = 'delivering' AND lease_owner = $4 \
             AND delivery_attempts = $5",
            [next_at, now],
            outcome,
            Some(error),
            now,
        ))
    }

    /// The portal refused the result for good (`ACCESS_DENIED`, `"404"`): the job is `dead`
    /// with `reason`; its result stays stored, so an operator's retry sends it again.
    pub async fn delivery_dead(&self, lease: &Lease, reason: &str, now: i64) -> Result<Fenced> {
        Ok(fenced_transition!(
            self,
            "end a delivery",
            lease,
            AttemptKind::Deliver,
            "UPDATE jobs SET state = 'dead', dead_reason = $1, next_delivery_at = NULL, \
             lease_owner = NULL, lease_until = NULL, updated_at = $2 \
             WHERE id = $3 AND state = 'delivering' AND lease_owner = $4 \
             AND delivery_attempts = $5",
            [reason, now],
            AttemptOutcome::Fatal,
            Some(reason),
            now,
        ))
    }
}
