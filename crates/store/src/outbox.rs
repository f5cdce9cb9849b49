//! The outbox: stored results waiting for `bizproc.event.send`, claimed in per-portal batches
//! under a lease, and the fenced transitions after a send.
//!
//! A `delivering` job is due when `next_delivery_at <= now`. Claiming it sets `next_delivery_at`
//! to the lease's expiry, so a sender that dies leaves the job due again once its lease runs out.
//! A delivered job is `done` and is never claimed again.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::Store;
use crate::attempts::{CHUNK, Claim, Ended, fenced_update};
use crate::error::{Error, Result};
use crate::model::{AttemptKind, AttemptOutcome, Delivery, Fenced, JobId, Lease, PortalBatch};
use crate::sql::{Failure, Record, Statement, count, decode, parse_json};

/// The largest batch Bitrix24's `batch` method takes.
pub const MAX_BATCH: usize = 50;

/// Picks the due results to claim, the oldest `$2` of each portal. The dialect's lock clause
/// follows, then [`CLAIM_DELIVERIES_TAKE`].
const CLAIM_DELIVERIES_PICK: &str = "WITH ranked AS (SELECT id, ROW_NUMBER() OVER \
     (PARTITION BY member_id ORDER BY next_delivery_at, id) AS position FROM jobs \
     WHERE state = 'delivering' AND next_delivery_at <= $1), \
     picked AS (SELECT id FROM jobs WHERE id IN (SELECT id FROM ranked WHERE position <= $2) \
     AND state = 'delivering' AND next_delivery_at <= $1";

/// Takes the picked results under the lease and returns them (see [`Claim::run`]).
/// A job still held by a sender when it is claimed again was left by one that died or stalled
/// between its send and its record: that send may have reached the portal (`send_uncertain`).
const CLAIM_DELIVERIES_TAKE: &str = ") UPDATE jobs SET delivery_attempts = delivery_attempts + 1, \
     send_uncertain = (send_uncertain OR lease_owner IS NOT NULL), lease_owner = $3, lease_until = $4, next_delivery_at = $4, updated_at = $1 \
     WHERE id IN (SELECT id FROM picked) \
     RETURNING id, member_id, action_code, event_token, workflow_id, result, result_kind, \
     delivery_attempts AS number, send_uncertain, deadline_at, created_at";

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
        let Some(claim) =
            Claim::new(AttemptKind::Deliver, worker, now, lease, max_per_portal.min(MAX_BATCH))
        else {
            return Ok(Vec::new());
        };
        let mut claimed = self
            .write("claim deliveries", async |conn| {
                let rows = claim.run(conn, &[CLAIM_DELIVERIES_PICK], CLAIM_DELIVERIES_TAKE).await?;
                rows.into_iter()
                    .map(|(row, lease)| {
                        Ok((row.get::<String>("member_id")?, delivery(&row, lease)?))
                    })
                    .collect::<Result<Vec<_>, Failure>>()
            })
            .await?;
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
        self.write("record deliveries", async |conn| {
            let mut moved = 0;
            for chunk in jobs.chunks(CHUNK) {
                let attempts = Statement::new("UPDATE attempts SET finished_at = ")
                    .push_bind(now)
                    .push(
                        ", outcome = 'ok', error = NULL WHERE kind = 'deliver' \
                         AND finished_at IS NULL AND job_id IN \
                         (SELECT id FROM jobs WHERE state = 'delivering' AND id IN (",
                    )
                    .push_list(chunk.iter().copied())
                    .push("))");
                conn.execute(attempts).await?;

                let update = Statement::new("UPDATE jobs SET state = 'done', delivered_at = ")
                    .push_bind(now)
                    .push(", updated_at = ")
                    .push_bind(now)
                    .push(
                        ", next_delivery_at = NULL, lease_owner = NULL, lease_until = NULL \
                         WHERE state = 'delivering' AND id IN (",
                    )
                    .push_list(chunk.iter().copied())
                    .push(")");
                moved += conn.execute(update).await?;
            }
            Ok(moved)
        })
        .await
    }

    /// The send failed transiently (network, 5xx, 503/429, `"423"`, an expired token being
    /// refreshed): the result is sent again at `next_at`. `uncertain`: the portal may have run
    /// the send although it was not answered (a dropped connection, a 5xx after the request
    /// went out); the job remembers it (see [`crate::Job::send_uncertain`]).
    pub async fn delivery_retry(
        &self,
        lease: &Lease,
        next_at: i64,
        uncertain: bool,
        outcome: AttemptOutcome,
        error: &str,
        now: i64,
    ) -> Result<Fenced> {
        let set = "next_delivery_at = $4, send_uncertain = (send_uncertain OR $5), \
                   lease_owner = NULL, lease_until = NULL, updated_at = $6";
        let update = fenced_update(lease, set).bind(next_at).bind(uncertain).bind(now);
        let ended = Ended { outcome, error: Some(error), at: now };
        self.end_attempt("schedule a redelivery", lease, AttemptKind::Deliver, update, ended).await
    }

    /// The portal refused the result for good (`ACCESS_DENIED`, `"404"`): the job is `dead`
    /// with `reason`; its result stays stored, so an operator's retry sends it again.
    pub async fn delivery_dead(&self, lease: &Lease, reason: &str, now: i64) -> Result<Fenced> {
        let set = "state = 'dead', dead_reason = $4, next_delivery_at = NULL, \
                   lease_owner = NULL, lease_until = NULL, updated_at = $5";
        let update = fenced_update(lease, set).bind(reason).bind(now);
        let ended = Ended { outcome: AttemptOutcome::Fatal, error: Some(reason), at: now };
        self.end_attempt("end a delivery", lease, AttemptKind::Deliver, update, ended).await
    }

    /// The portal answered "not found" to a result whose earlier send may have reached it: the
    /// workflow most likely took it then (protocol §3.3: a finished workflow answers "not
    /// found"). The job is `done` with `delivery_unconfirmed` and `reason`, never sent again.
    pub async fn delivery_unconfirmed(
        &self,
        lease: &Lease,
        reason: &str,
        now: i64,
    ) -> Result<Fenced> {
        let set = "state = 'done', delivery_unconfirmed = $4, delivered_at = $5, \
                   next_delivery_at = NULL, lease_owner = NULL, lease_until = NULL, \
                   updated_at = $5";
        let update = fenced_update(lease, set).bind(true).bind(now);
        let ended = Ended { outcome: AttemptOutcome::Unconfirmed, error: Some(reason), at: now };
        self.end_attempt(
            "record an unconfirmed delivery",
            lease,
            AttemptKind::Deliver,
            update,
            ended,
        )
        .await
    }
}

/// Decodes a row [`CLAIM_DELIVERIES_TAKE`] returned, claimed under `lease`.
fn delivery(row: &Record, lease: Lease) -> Result<Delivery, Failure> {
    let id = lease.job_id;
    let (Some(result), Some(kind)) =
        (row.get::<Option<&str>>("result")?, row.get::<Option<&str>>("result_kind")?)
    else {
        return Err(Error::Corrupt {
            what: "delivering job without a stored result",
            value: id.to_string(),
        }
        .into());
    };
    Ok(Delivery {
        id,
        action_code: row.get("action_code")?,
        event_token: row.get("event_token")?,
        workflow_id: row.get("workflow_id")?,
        result: parse_json(id, "result", result)?,
        result_kind: decode(kind)?,
        attempt: count(lease.number)?,
        send_uncertain: row.get("send_uncertain")?,
        deadline_at: row.get("deadline_at")?,
        created_at: row.get("created_at")?,
        lease,
    })
}
