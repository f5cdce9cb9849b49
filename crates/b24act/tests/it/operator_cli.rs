//! `b24act jobs list | show | retry | cancel` as an operator uses it: arguments parsed as typed,
//! a configuration file naming the store, jobs put in every state through the store's own API.
//! Each scenario runs on SQLite (a file in a fresh directory) and on PostgreSQL (a fresh
//! database per test, `operator_cli::postgres::*`), which is ignored by name when
//! `B24ACT_TEST_POSTGRES_URL` is not set (see `store::testing`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use b24act::operator_cli::{self, JobsCommand};
use clap::{CommandFactory, Parser, Subcommand};
use host::clock::now_ms;
use host::config::Config;
use sandbox::TempDir;
use serde_json::{Value, json};
use store::testing::{ScratchStore, with_scratch_store};
use store::{
    AttemptOutcome, Backend, CANCELLED_BY_OPERATOR, Enqueued, JobId, JobState, Lease, NewJob,
    OperatorAction, ResultKind, Store, StoreKey, StoreOptions,
};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// 2023-11-14 22:13:20Z: the jobs' clock, long past, so their deadlines have passed for real.
const T0: i64 = 1_700_000_000_000;

/// The deadline of every job created here.
const DEADLINE: i64 = T0 + 30 * 60 * 1000;

const LEASE: Duration = Duration::from_secs(30);

store::on_both_stores!(super::with_operator =>
    list_shows_jobs_newest_first_with_counts_by_state,
    list_filters_by_state_and_portal,
    list_pages_with_before_and_says_how_to_get_the_next_page,
    show_prints_every_field_the_payload_the_result_and_every_attempt,
    retry_requeues_a_dead_job_and_can_extend_its_deadline,
    retry_redelivers_a_dead_delivery_without_recomputing_it,
    retry_refuses_a_job_that_is_still_pending,
    cancel_ends_a_queued_job,
    cancel_of_a_running_job_closes_its_attempt,
    cancel_of_a_done_job_is_refused_and_changes_nothing,
    unknown_ids_are_reported_by_every_command,
    json_output_carries_every_field_for_scripts,
    event_token_signatures_are_shown_only_with_reveal,
    the_binary_reports_on_stdout_and_fails_with_documented_exit_codes,
    cancel_with_fallback_stores_the_actions_fallback_and_records_who,
    complete_checks_values_against_the_return_properties_naming_the_property,
    unsafe_settlements_and_unforced_resends_are_refused,
    list_filters_by_action_workflow_document_and_time_and_shows_the_result_kind,
);

async fn list_shows_jobs_newest_first_with_counts_by_state(op: Operator) {
    op.done("p1", "a", T0).await;
    op.dead("p2", "b", T0 + 10_000).await;
    op.queued("p1", "c", T0 + 20_000).await;

    assert_eq!(
        op.ok(&["list"]).await,
        "\
ID  STATE   RESULT  PORTAL  CODE                ATTEMPTS  DELIVERIES  CREATED               UPDATED
3   queued  -       p1      check_credit_limit  0         0           2023-11-14 22:13:40Z  2023-11-14 22:13:40Z
2   dead    dead    p2      check_credit_limit  1         0           2023-11-14 22:13:30Z  2023-11-14 22:13:31Z
1   done    ok      p1      check_credit_limit  1         1           2023-11-14 22:13:20Z  2023-11-14 22:13:24Z
all jobs: 1 queued, 0 running, 0 retry_wait, 0 delivering, 1 done, 1 dead
"
    );
}

async fn list_filters_by_state_and_portal(op: Operator) {
    let a = op.done("p1", "a", T0).await;
    let b = op.dead("p2", "b", T0 + 10_000).await;
    let c = op.queued("p1", "c", T0 + 20_000).await;

    assert_eq!(ids_listed(&op.ok(&["list", "--state", "dead"]).await), [b]);
    assert_eq!(ids_listed(&op.ok(&["list", "--portal", "p1"]).await), [c, a]);
    assert_eq!(ids_listed(&op.ok(&["list", "--portal", "p1", "--state", "done"]).await), [a]);

    let none = op.ok(&["list", "--portal", "p2", "--state", "done"]).await;
    assert_eq!(
        none,
        "no jobs match\n\
         all jobs: 1 queued, 0 running, 0 retry_wait, 0 delivering, 1 done, 1 dead\n",
        "the counts underneath are the whole queue's"
    );
}

async fn list_pages_with_before_and_says_how_to_get_the_next_page(op: Operator) {
    let mut ids = Vec::new();
    for (n, token) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        ids.push(op.queued("p1", token, T0 + 1000 * n as i64).await);
    }
    let newest_first: Vec<JobId> = ids.iter().rev().copied().collect();

    let first = op.ok(&["list", "--limit", "2"]).await;
    assert_eq!(ids_listed(&first), newest_first[..2]);
    let hint = format!("more: b24act jobs list --limit 2 --before {}\n", newest_first[1]);
    assert!(first.contains(&hint), "{first}");

    let before = newest_first[1].to_string();
    let second = op.ok(&["list", "--limit", "2", "--before", &before]).await;
    assert_eq!(ids_listed(&second), newest_first[2..4]);

    let before = newest_first[3].to_string();
    let last = op.ok(&["list", "--limit", "2", "--before", &before]).await;
    assert_eq!(ids_listed(&last), newest_first[4..]);
    assert!(!last.contains("more:"), "a page that is not full is the last: {last}");

    let filtered = op.ok(&["list", "--state", "queued", "--portal", "p1", "--limit", "4"]).await;
    let hint = format!(
        "more: b24act jobs list --state queued --portal p1 --limit 4 --before {}\n",
        newest_first[3]
    );
    assert!(filtered.contains(&hint), "the hint keeps the filters: {filtered}");
}

async fn show_prints_every_field_the_payload_the_result_and_every_attempt(op: Operator) {
    let id = op.enqueue("p1", "a", T0).await;
    let first = op.claim(id, "worker-1", T0 + 1000).await;
    let later =
        op.store.retry_later(&first, T0 + 61_000, AttemptOutcome::Retryable, "HTTP 503", T0 + 2000);
    assert!(later.await.unwrap().is_applied());
    let second = op.claim(id, "worker-2", T0 + 61_000).await;
    assert!(op.store.complete(&second, &result(), T0 + 62_000).await.unwrap().is_applied());
    op.deliver(id, "sender-1", T0 + 63_000).await;
    assert_eq!(op.store.delivered(&[id], T0 + 64_000).await.unwrap(), 1);

    assert_eq!(
        op.ok(&["show", &id.to_string()]).await,
        format!(
            "\
job {id}
  state:            done
  outcome:          ok
  delivery:         confirmed by the portal
  dead reason:      -
  portal:           p1
  action:           check_credit_limit
  workflow:         wf-a
  document:         DEAL_1
  event token:      wf-a|A1|a.<signature hidden; --reveal shows it>
  waits for result: yes
  deadline:         2023-11-14 22:43:20Z
  attempts:         2
  next run:         -
  lease owner:      -
  lease until:      -
  result kind:      success
  deliveries:       1
  next delivery:    -
  delivered:        2023-11-14 22:14:24Z
  created:          2023-11-14 22:13:20Z
  updated:          2023-11-14 22:14:24Z
  payload version:  1
  payload:
    {{
      \"document_id\": [
        \"crm\",
        \"CCrmDocumentDeal\",
        \"DEAL_1\"
      ],
      \"properties\": {{
        \"company_id\": 42,
        \"amount\": 1500.5
      }}
    }}
  result:
    {{
      \"return_values\": {{
        \"available_limit\": 250000.5,
        \"approval_required\": \"N\"
      }},
      \"log_message\": \"Limit checked\"
    }}

attempts:
  KIND     #  WORKER    STARTED               FINISHED              OUTCOME    ERROR
  execute  1  worker-1  2023-11-14 22:13:21Z  2023-11-14 22:13:22Z  retryable  HTTP 503
  execute  2  worker-2  2023-11-14 22:14:21Z  2023-11-14 22:14:22Z  ok         -
  deliver  1  sender-1  2023-11-14 22:14:23Z  2023-11-14 22:14:24Z  ok         -
no operator actions
"
        )
    );
}

async fn retry_requeues_a_dead_job_and_can_extend_its_deadline(op: Operator) {
    let id = op.dead("p1", "a", T0).await;
    let shown = op.ok(&["show", &id.to_string()]).await;
    assert!(shown.contains("  dead reason:      HTTP 401: unauthorized\n"), "{shown}");

    let retried = op.ok(&["retry", &id.to_string()]).await;
    assert_eq!(
        retried,
        format!(
            "job {id} requeued: it runs again now (attempt 2)\n\
             note: its deadline passed (2023-11-14 22:43:20Z), so it resolves through the failure \
             policy at once; retry with --deadline-in to let it run\n"
        )
    );
    let job = op.job(id).await;
    assert_eq!(
        (job.state, job.dead_reason, job.call.deadline_at),
        (JobState::Queued, None, DEADLINE)
    );

    // It dies again; this time the operator gives it two more hours.
    let lease = op.claim(id, "w", now_ms()).await;
    let killed = op.store.kill(&lease, AttemptOutcome::Fatal, "HTTP 401: unauthorized", now_ms());
    assert!(killed.await.unwrap().is_applied());
    let before = now_ms();
    let retried = op.ok(&["retry", &id.to_string(), "--deadline-in", "2h"]).await;
    let after = now_ms();
    let job = op.job(id).await;
    assert_eq!(job.state, JobState::Queued);
    let two_hours = 2 * 3600 * 1000;
    assert!((before + two_hours..=after + two_hours).contains(&job.call.deadline_at));
    assert_eq!(
        retried,
        format!(
            "job {id} requeued: it runs again now (attempt 3)\nnew deadline: {}\n",
            operator_cli::timestamp(job.call.deadline_at)
        )
    );
    let again = op.claim(id, "w", now_ms()).await;
    assert_eq!(again.number(), 3);
}

async fn retry_redelivers_a_dead_delivery_without_recomputing_it(op: Operator) {
    let id = op.dead_in_delivery("p1", "a", T0).await;
    let shown = op.ok(&["show", &id.to_string()]).await;
    assert!(shown.contains("  dead reason:      ACCESS_DENIED: the app was removed\n"), "{shown}");
    assert!(shown.contains("  result kind:      success\n"), "{shown}");

    let retried = op.ok(&["retry", &id.to_string()]).await;
    assert_eq!(
        retried,
        format!(
            "job {id} will be redelivered: its stored success result is sent again now, not \
             recomputed\n"
        )
    );
    let job = op.job(id).await;
    assert_eq!((job.state, job.attempts, job.dead_reason), (JobState::Delivering, 1, None));
    assert_eq!(job.result, Some(result()), "the stored result is kept as it was");
    assert!(op.store.claim_due("w", now_ms(), LEASE, 10).await.unwrap().is_empty());
    let resent = op.store.claim_deliveries("s", now_ms(), LEASE, 50).await.unwrap();
    assert_eq!(resent[0].jobs[0].result, result());
}

async fn retry_refuses_a_job_that_is_still_pending(op: Operator) {
    let done = op.done("p1", "a", T0).await;
    let queued = op.queued("p1", "b", T0 + 1000).await;

    assert_eq!(
        op.err(&["retry", &queued.to_string()]).await,
        format!("cannot retry job {queued}: it is queued")
    );
    assert_eq!(
        op.err(&["retry", &done.to_string()]).await,
        format!("cannot retry job {done}: it is done")
    );
    assert_eq!(op.job(queued).await.state, JobState::Queued);
}

async fn cancel_ends_a_queued_job(op: Operator) {
    let id = op.queued("p1", "a", T0).await;

    assert_eq!(
        op.ok(&["cancel", &id.to_string()]).await,
        format!(
            "job {id} cancelled: it is dead with the reason \"cancelled by operator\"; nothing \
             was sent to the portal (--fallback sends the action's fallback values)\n"
        )
    );
    let job = op.job(id).await;
    assert_eq!(
        (job.state, job.dead_reason.as_deref()),
        (JobState::Dead, Some(CANCELLED_BY_OPERATOR))
    );
    assert!(op.store.claim_due("w", now_ms(), LEASE, 10).await.unwrap().is_empty());
    let listed = op.ok(&["list", "--state", "dead"]).await;
    assert_eq!(ids_listed(&listed), [id]);
}

async fn cancel_of_a_running_job_closes_its_attempt(op: Operator) {
    let id = op.enqueue("p1", "a", T0).await;
    let lease = op.claim(id, "worker-1", T0 + 1000).await;

    op.ok(&["cancel", &id.to_string()]).await;
    let shown = op.ok(&["show", &id.to_string()]).await;
    let attempt = shown.lines().find(|line| line.starts_with("  execute  1")).unwrap();
    assert!(attempt.ends_with("cancelled  cancelled by operator"), "{shown}");
    assert!(
        !op.store.complete(&lease, &result(), now_ms()).await.unwrap().is_applied(),
        "the worker lost its lease"
    );
}

async fn cancel_of_a_done_job_is_refused_and_changes_nothing(op: Operator) {
    let id = op.done("p1", "a", T0).await;
    let before = op.job(id).await;

    assert_eq!(
        op.err(&["cancel", &id.to_string()]).await,
        format!("cannot cancel job {id}: it is done")
    );
    assert_eq!(op.job(id).await, before);
}

async fn unknown_ids_are_reported_by_every_command(op: Operator) {
    op.queued("p1", "a", T0).await;
    for command in ["show", "retry", "cancel"] {
        assert_eq!(op.err(&[command, "4242"]).await, "job 4242 does not exist", "{command}");
    }
    assert_eq!(op.err(&["show", "4242", "--json"]).await, "job 4242 does not exist");
}

async fn json_output_carries_every_field_for_scripts(op: Operator) {
    let a = op.dead_in_delivery("p1", "a", T0).await;
    let b = op.queued("p2", "b", T0 + 10_000).await;

    let list: Value = serde_json::from_str(&op.ok(&["list", "--json", "--limit", "1"]).await)
        .expect("list --json prints JSON");
    assert_eq!(list["version"], 3);
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["jobs"][0]["id"], b.0);
    assert_eq!(list["jobs"][0]["state"], "queued");
    assert_eq!(list["jobs"][0]["outcome"], Value::Null);
    assert_eq!(list["jobs"][0]["document_id"], "DEAL_1");
    assert_eq!(list["jobs"][0]["member_id"], "p2");
    assert_eq!(list["next_before"], b.0);
    assert_eq!(
        list["counts"],
        json!({"queued": 1, "running": 0, "retry_wait": 0, "delivering": 0, "done": 0, "dead": 1})
    );

    let show: Value = serde_json::from_str(&op.ok(&["show", &a.to_string(), "--json"]).await)
        .expect("show --json prints JSON");
    let job = &show["job"];
    assert_eq!(job["id"], a.0);
    assert_eq!(job["state"], "dead");
    assert_eq!(job["dead_reason"], "ACCESS_DENIED: the app was removed");
    assert_eq!(job["result"], result());
    assert_eq!(job["result_kind"], "success");
    assert_eq!(job["outcome"], "dead");
    assert_eq!(show["history"], json!([]));
    assert_eq!(job["payload"], payload());
    assert_eq!(job["deadline_at"], DEADLINE);
    assert_eq!(job["created_at"], T0);
    assert_eq!(
        show["attempts"],
        json!([
            {"kind": "execute", "number": 1, "worker": "w", "started_at": T0 + 1,
             "finished_at": T0 + 2, "outcome": "ok", "error": null},
            {"kind": "deliver", "number": 1, "worker": "s", "started_at": T0 + 3,
             "finished_at": T0 + 4, "outcome": "fatal",
             "error": "ACCESS_DENIED: the app was removed"},
        ])
    );
}

async fn event_token_signatures_are_shown_only_with_reveal(op: Operator) {
    let id = op.dead("p1", "a", T0).await.to_string();
    let token = "wf-a|A1|a.sig";
    let hidden = "wf-a|A1|a.<signature hidden; --reveal shows it>";
    let (text, json) = (["show", &id, "--config"], ["show", &id, "--json", "--config"]);
    let list = ["list", "--json", "--config"];
    for args in [&text[..], &json, &list] {
        let output = op.binary(args).await;
        assert_eq!(output.code, Some(0), "{output:?}");
        assert!(!output.stdout.contains(".sig"), "jobs {args:?} hides the signature: {output:?}");
        assert!(output.stdout.contains(hidden), "and keeps the readable part: {output:?}");
    }
    let shown = op.binary(&["show", &id, "--reveal", "--config"]).await;
    assert!(shown.stdout.contains(&format!("  event token:      {token}\n")), "{shown:?}");
    let shown = op.binary(&["show", &id, "--json", "--reveal", "--config"]).await;
    let shown: Value = serde_json::from_str(&shown.stdout).expect("show --json prints JSON");
    assert_eq!(shown["job"]["event_token"], token);
    let listed = op.binary(&["list", "--json", "--reveal", "--config"]).await;
    let listed: Value = serde_json::from_str(&listed.stdout).expect("list --json prints JSON");
    assert_eq!(listed["jobs"][0]["event_token"], token);
}

async fn the_binary_reports_on_stdout_and_fails_with_documented_exit_codes(op: Operator) {
    let dead = op.dead("p1", "a", T0).await;
    let queued = op.queued("p2", "b", T0 + 10_000).await;
    let (dead_id, queued_id) = (dead.to_string(), queued.to_string());

    let listed = op.binary(&["list", "--config"]).await;
    assert_eq!(listed.code, Some(0), "{listed:?}");
    assert_eq!(ids_listed(&listed.stdout), [queued, dead]);
    assert!(
        listed.stdout.ends_with(
            "all jobs: 1 queued, 0 running, 0 retry_wait, 0 delivering, 0 done, 1 dead\n"
        )
    );

    let shown = op.binary(&["show", &dead_id, "--config"]).await;
    assert_eq!(shown.code, Some(0), "{shown:?}");
    assert!(shown.stdout.contains("  dead reason:      HTTP 401: unauthorized\n"), "{shown:?}");

    let retried = op.binary(&["retry", &dead_id, "--deadline-in", "1h", "--config"]).await;
    assert_eq!(retried.code, Some(0), "{retried:?}");
    assert!(retried.stdout.starts_with(&format!("job {dead} requeued")), "{retried:?}");
    assert_eq!(op.job(dead).await.state, JobState::Queued);

    let cancelled = op.binary(&["cancel", &queued_id, "--config"]).await;
    assert_eq!(cancelled.code, Some(0), "{cancelled:?}");
    let again = op.binary(&["cancel", &queued_id, "--config"]).await;
    assert_eq!(again.code, Some(1), "a refused command exits 1: {again:?}");
    assert!(
        again
            .stderr
            .lines()
            .any(|line| line == format!("b24act: cannot cancel job {queued}: it is dead")),
        "the error is printed once, prefixed: {again:?}"
    );
    assert!(again.stdout.is_empty(), "{again:?}");

    let unknown = op.binary(&["show", "4242", "--config"]).await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(
        unknown.stderr.lines().any(|line| line == "b24act: job 4242 does not exist"),
        "{unknown:?}"
    );

    let usage = op.binary(&["list", "--state", "stuck", "--config"]).await;
    assert_eq!(usage.code, Some(2), "bad usage exits 2: {usage:?}");
    assert!(usage.stderr.contains("possible values: queued, running"), "{usage:?}");

    for output in [&listed, &shown, &retried, &cancelled, &again, &unknown] {
        for secret in [KEY, "s3cret"] {
            assert!(
                !output.stdout.contains(secret) && !output.stderr.contains(secret),
                "{output:?}"
            );
        }
    }
}

async fn cancel_with_fallback_stores_the_actions_fallback_and_records_who(op: Operator) {
    let id = op.dead("p1", "a", T0).await;

    assert_eq!(
        op.ok(&["cancel", &id.to_string(), "--fallback"]).await,
        format!(
            "job {id} cancelled: its fallback values are sent to the workflow now (reason \
             \"cancelled by operator\")\n"
        )
    );
    let job = op.job(id).await;
    assert_eq!((job.state, job.result_kind), (JobState::Delivering, Some(ResultKind::Fallback)));
    assert_eq!(
        job.result,
        Some(json!({
            "return_values": {
                "approval_required": "Y",
                "reason": "Manual approval: cancelled by operator",
                "error": "cancelled by operator",
            },
            "log_message": "Credit check failed, sent to manual approval: cancelled by operator",
        })),
        "the example's declared fallback, as a worker builds it at the deadline"
    );
    let shown = op.ok(&["show", &id.to_string()]).await;
    assert!(shown.contains("  outcome:          fallback\n"), "{shown}");
    assert!(shown.contains("history:\n  AT"), "{shown}");
    assert!(
        shown.contains("cli:tester  cancel_with_fallback  fallback values sent"),
        "the history names the actor: {shown}"
    );
    let listed = op.ok(&["list"]).await;
    assert!(
        listed.lines().nth(1).is_some_and(|line| line.contains("delivering  fallback")),
        "{listed}"
    );
}

async fn complete_checks_values_against_the_return_properties_naming_the_property(op: Operator) {
    let id = op.queued("p1", "a", T0).await;
    let job_id = id.to_string();
    let complete = |values: &[&str]| {
        let mut args = vec!["complete", job_id.as_str()];
        for value in values {
            args.extend(["--value", value]);
        }
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let refused = async |values: &[&str]| {
        let args = complete(values);
        op.err(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
    };
    assert_eq!(
        refused(&["approval_required=maybe"]).await,
        "`approval_required`: `maybe` is not Y or N"
    );
    assert_eq!(
        refused(&["available_limit=lots"]).await,
        "`available_limit`: `lots` is not a number"
    );
    assert_eq!(
        refused(&["limit=5"]).await,
        "`limit` is not a return property of `check_credit_limit` (it returns available_limit, \
         approval_required, reason, error)"
    );
    assert_eq!(
        refused(&["reason=a", "reason=b"]).await,
        "`reason`: expected one value, got a list of 2"
    );
    assert!(parse(&["complete", "1", "--value", "no-equals-sign"]).is_err());
    assert_eq!(op.job(id).await.state, JobState::Queued, "refused values change nothing");

    let args =
        complete(&["available_limit=8000.5", "approval_required=N", "reason=checked by phone"]);
    let done = op.ok(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(
        done,
        format!("job {id} completed by hand: its values are sent to the workflow now\n")
    );
    let job = op.job(id).await;
    assert_eq!((job.state, job.result_kind), (JobState::Delivering, Some(ResultKind::Manual)));
    assert_eq!(
        job.result.unwrap()["return_values"],
        json!({
            "available_limit": 8000.5,
            "approval_required": "N",
            "reason": "checked by phone",
            "error": "",
        })
    );
    let history = op.store.job(id).await.unwrap().unwrap().history;
    assert_eq!(
        (history.len(), history[0].actor.as_str(), history[0].action),
        (1, "cli:tester", OperatorAction::Complete)
    );
}

async fn unsafe_settlements_and_unforced_resends_are_refused(op: Operator) {
    let done = op.done("p1", "a", T0).await;
    let dead = op.dead_in_delivery("p1", "b", T0 + 10_000).await;
    let queued = op.queued("p1", "c", T0 + 20_000).await;

    let error = op.err(&["cancel", &done.to_string(), "--fallback"]).await;
    assert_eq!(
        error,
        format!(
            "cannot cancel with the fallback job {done}: it already has a result, which the \
             portal accepted; a stored result is never replaced"
        )
    );
    let error = op.err(&["complete", &dead.to_string(), "--value", "reason=x"]).await;
    assert!(error.contains("which the portal refused (`jobs retry` sends it again)"), "{error}");
    let error = op.err(&["resend", &done.to_string()]).await;
    assert!(error.contains("only with force (--force)"), "{error}");
    let error = op.err(&["resend", &queued.to_string(), "--force"]).await;
    assert_eq!(
        error,
        format!("cannot re-send the result of job {queued}: it has no stored result")
    );
    assert_eq!(op.job(done).await.state, JobState::Done, "refusals change nothing");

    let resent = op.ok(&["resend", &done.to_string(), "--force"]).await;
    assert!(
        resent.starts_with(&format!("job {done}: its stored result is sent again now")),
        "{resent}"
    );
    let job = op.job(done).await;
    assert_eq!((job.state, job.result), (JobState::Delivering, Some(result())));
}

async fn list_filters_by_action_workflow_document_and_time_and_shows_the_result_kind(op: Operator) {
    let a = op.done("p1", "a", T0).await;
    let b = op.dead("p1", "b", T0 + 60_000).await;
    let c = op.queued("p2", "c", T0 + 120_000).await;
    op.ok(&["complete", &b.to_string(), "--value", "reason=by hand"]).await;

    assert_eq!(ids_listed(&op.ok(&["list", "--workflow", "wf-b"]).await), [b]);
    assert_eq!(ids_listed(&op.ok(&["list", "--action", "check_credit_limit"]).await), [c, b, a]);
    assert!(ids_listed(&op.ok(&["list", "--action", "other"]).await).is_empty());
    assert_eq!(
        ids_listed(&op.ok(&["list", "--document", "DEAL_1", "--portal", "p1"]).await),
        [b, a]
    );
    let window = ["list", "--since", "2023-11-14 22:14:00Z", "--until", "2023-11-14 22:15:20Z"];
    assert_eq!(ids_listed(&op.ok(&window).await), [b]);
    assert_eq!(ids_listed(&op.ok(&["list", "--since", "1h"]).await), Vec::<JobId>::new());

    let listed = op.ok(&["list", "--portal", "p1"]).await;
    let results: Vec<&str> =
        listed.lines().skip(1).take(2).filter_map(|line| line.split_whitespace().nth(2)).collect();
    assert_eq!(results, ["manual", "ok"], "{listed}");
    let paged = op
        .ok(&["list", "--document", "DEAL_1", "--since", "2023-11-14 22:13:00Z", "--limit", "1"])
        .await;
    assert!(
        paged.contains(&format!(
            "more: b24act jobs list --document DEAL_1 --since '2023-11-14 22:13:00Z' --limit 1 \
             --before {c}"
        )),
        "the hint keeps every filter: {paged}"
    );
    assert!(parse(&["list", "--since", "yesterday-ish"]).is_err());
}

// Scenarios that need no database of their own.

#[test]
fn the_binary_offers_the_jobs_commands() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_b24act"))
        .args(["jobs", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for command in ["list", "show", "retry", "cancel", "--config"] {
        assert!(help.contains(command), "`b24act jobs --help` mentions {command}:\n{help}");
    }
}

#[test]
fn arguments_parse_as_documented() {
    Cli::command().debug_assert();
    assert_eq!(
        parse(&["list"]),
        Ok(JobsCommand::List {
            state: None,
            portal: None,
            action: None,
            workflow: None,
            document: None,
            since: None,
            until: None,
            limit: 50,
            before: None,
            json: false,
            reveal: false
        })
    );
    assert_eq!(
        parse(&["retry", "7", "--deadline-in", "1h 30m"]),
        Ok(JobsCommand::Retry {
            id: 7,
            deadline_in: Some(Duration::from_secs(5400)),
            force: false
        })
    );
    let unknown_state = parse(&["list", "--state", "stuck"]).unwrap_err();
    assert!(
        unknown_state
            .contains("[possible values: queued, running, retry_wait, delivering, done, dead]"),
        "{unknown_state}"
    );
    for bad in [
        &["show", "0"][..],
        &["show", "abc"],
        &["cancel"],
        &["list", "--limit", "0"],
        &["list", "--limit", "1001"],
        &["retry", "1", "--deadline-in", "soon"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?} is refused");
    }
}

#[tokio::test]
async fn a_missing_sqlite_store_is_reported_not_created() {
    let dir = TempDir::new("b24act_ops_missing_sqlite").unwrap();
    let db = dir.path().join("elsewhere.db");
    let (config, _) = write_config(dir.path(), &format!("sqlite:{}", db.display()));

    let error = run(&config, &["list"]).await.unwrap_err();
    assert!(error.starts_with(&format!("no store at `{}` (store.url)", db.display())), "{error}");
    assert!(!db.exists(), "the CLI does not create an empty store");
}

#[tokio::test]
async fn a_bad_store_url_is_reported_without_its_password() {
    let dir = TempDir::new("b24act_ops_bad_url").unwrap();
    let (config, _) = write_config(dir.path(), "postgres://operator:hunter2@127.0.0.1:port/b24act");

    let error = run(&config, &["list"]).await.unwrap_err();
    assert!(
        error.starts_with("invalid store URL `postgres://operator:***@127.0.0.1:port/b24act`"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
}

// The operator and the store behind it.

/// What a test works with: the configuration the CLI reads, and the same store opened directly
/// to put jobs in place and look at them afterwards.
struct Operator {
    config: Config,
    /// Where `config` was written, for the binary.
    config_path: PathBuf,
    store: Store,
}

/// What a `b24act` process did.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Operator {
    /// Runs `b24act jobs ARGS…` and returns what it printed, or its error as `main` prints it.
    async fn run(&self, args: &[&str]) -> Result<String, String> {
        run(&self.config, args).await
    }

    /// Runs the real `b24act jobs ARGS… PATH`: `args` end with `--config`, followed here by the
    /// configuration's path.
    async fn binary(&self, args: &[&str]) -> Output {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_b24act"));
        command
            .arg("jobs")
            .args(args)
            .arg(&self.config_path)
            .env_remove("B24ACT_CONFIG")
            .stdin(std::process::Stdio::null());
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("the process runner")
            .expect("run b24act");
        Output {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
        }
    }

    async fn ok(&self, args: &[&str]) -> String {
        self.run(args).await.unwrap_or_else(|error| panic!("jobs {args:?} failed: {error}"))
    }

    async fn err(&self, args: &[&str]) -> String {
        match self.run(args).await {
            Ok(out) => panic!("jobs {args:?} succeeded, printing:\n{out}"),
            Err(error) => error,
        }
    }

    async fn job(&self, id: JobId) -> store::Job {
        self.store.job(id).await.unwrap().expect("the job exists").job
    }

    async fn enqueue(&self, member: &str, token: &str, at: i64) -> JobId {
        match self.store.enqueue(&[call(member, token)], at).await.unwrap()[..] {
            [Enqueued::Created(id)] => id,
            ref other => panic!("expected one new job, got {other:?}"),
        }
    }

    /// Claims job `id` for `worker`; it must be the only job due.
    async fn claim(&self, id: JobId, worker: &str, at: i64) -> Lease {
        let claimed = self.store.claim_due(worker, at, LEASE, 10).await.unwrap();
        assert_eq!(claimed.iter().map(|job| job.id).collect::<Vec<_>>(), [id]);
        claimed[0].lease.clone()
    }

    /// Claims job `id`'s delivery for `sender`; it must be the only one due.
    async fn deliver(&self, id: JobId, sender: &str, at: i64) -> Lease {
        let batches = self.store.claim_deliveries(sender, at, LEASE, 50).await.unwrap();
        let claimed: Vec<JobId> =
            batches.iter().flat_map(|batch| batch.jobs.iter().map(|job| job.id)).collect();
        assert_eq!(claimed, [id]);
        batches[0].jobs[0].lease.clone()
    }

    async fn queued(&self, member: &str, token: &str, at: i64) -> JobId {
        self.enqueue(member, token, at).await
    }

    /// A job whose connector failed for good with no fallback: `dead` after one attempt.
    async fn dead(&self, member: &str, token: &str, at: i64) -> JobId {
        let id = self.enqueue(member, token, at).await;
        let lease = self.claim(id, "w", at + 1).await;
        let kill =
            self.store.kill(&lease, AttemptOutcome::Fatal, "HTTP 401: unauthorized", at + 1000);
        assert!(kill.await.unwrap().is_applied());
        id
    }

    /// A job whose result was computed and delivered: `done`.
    async fn done(&self, member: &str, token: &str, at: i64) -> JobId {
        let id = self.enqueue(member, token, at).await;
        let lease = self.claim(id, "w", at + 1).await;
        assert!(self.store.complete(&lease, &result(), at + 2).await.unwrap().is_applied());
        self.deliver(id, "s", at + 3).await;
        assert_eq!(self.store.delivered(&[id], at + 4000).await.unwrap(), 1);
        id
    }

    /// A job whose result the portal refused for good: `dead`, its result kept.
    async fn dead_in_delivery(&self, member: &str, token: &str, at: i64) -> JobId {
        let id = self.enqueue(member, token, at).await;
        let lease = self.claim(id, "w", at + 1).await;
        assert!(self.store.complete(&lease, &result(), at + 2).await.unwrap().is_applied());
        let sending = self.deliver(id, "s", at + 3).await;
        let refused =
            self.store.delivery_dead(&sending, "ACCESS_DENIED: the app was removed", at + 4);
        assert!(refused.await.unwrap().is_applied());
        id
    }
}

fn call(member: &str, token: &str) -> NewJob {
    NewJob {
        member_id: member.to_owned(),
        action_code: "check_credit_limit".to_owned(),
        event_token: format!("wf-{token}|A1|{token}.sig"),
        workflow_id: format!("wf-{token}"),
        document_id: Some("DEAL_1".to_owned()),
        payload: payload(),
        payload_version: 1,
        waits_for_result: true,
        deadline_at: DEADLINE,
    }
}

/// A job payload as the intake writes it (`host::payload::JobPayload`, version 1).
fn payload() -> Value {
    json!({
        "document_id": ["crm", "CCrmDocumentDeal", "DEAL_1"],
        "properties": { "company_id": 42, "amount": 1500.5 },
    })
}

/// A stored result as the worker writes it (`host::payload::JobResult`).
fn result() -> Value {
    json!({
        "return_values": { "available_limit": 250000.5, "approval_required": "N" },
        "log_message": "Limit checked",
    })
}

/// The ids in the first column of a `jobs list` table.
fn ids_listed(table: &str) -> Vec<JobId> {
    table
        .lines()
        .skip(1)
        .map_while(|line| line.split_whitespace().next()?.parse().ok().map(JobId))
        .collect()
}

/// `b24act jobs …` as the binary parses it.
#[derive(Debug, Parser)]
#[command(name = "b24act")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
}

fn parse(args: &[&str]) -> Result<JobsCommand, String> {
    let argv = ["b24act", "jobs"].iter().chain(args);
    match Cli::try_parse_from(argv) {
        Ok(Cli { command: Top::Jobs { command } }) => Ok(command),
        Err(error) => Err(error.to_string()),
    }
}

/// Parses `args` as `b24act jobs ARGS…` and runs the command with the configuration at
/// `config`; an error comes back as `main` prints it (`{:#}`, the whole chain).
async fn run(config: &Config, args: &[&str]) -> Result<String, String> {
    let command = parse(args).unwrap_or_else(|usage| panic!("jobs {args:?}: {usage}"));
    let mut out = Vec::new();
    match operator_cli::run(config, command, "cli:tester", &mut out).await {
        Ok(()) => Ok(String::from_utf8(out).expect("UTF-8 output")),
        Err(error) => Err(format!("{error:#}")),
    }
}

/// Writes examples/b24act.toml with its store at `store_url`, a key and a client secret into `dir`
/// and loads it as `b24act` does; returns it with its path.
fn write_config(dir: &Path, store_url: &str) -> (Config, PathBuf) {
    let mut config = sandbox::example();
    sandbox::set(&mut config, "store.url", store_url);
    sandbox::set(&mut config, "store.encryption_key", KEY);
    sandbox::set(&mut config, "app.client_secret", "s3cret");
    let path = dir.join("b24act.toml");
    std::fs::write(&path, config.to_string()).unwrap();
    let config = Config::load_with_env(&path, []).unwrap_or_else(|error| panic!("{error:#}"));
    (config, path)
}

/// Runs `test` with a fresh store on `backend` and a configuration naming it; removes the store
/// afterwards even when the test panics, then re-raises the panic.
async fn with_operator<F, Fut>(backend: Backend, name: &str, test: F)
where
    F: FnOnce(Operator) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_scratch_store(backend, name, |scratch| operate(scratch, test)).await;
}

/// Writes the configuration naming the store at `url` into `dir`, opens the store as the server
/// would have, and runs `test` with both.
async fn operate<F, Fut>(scratch: ScratchStore, test: F)
where
    F: FnOnce(Operator) -> Fut,
    Fut: Future<Output = ()>,
{
    let url = scratch.url;
    let (config, config_path) = write_config(&scratch.dir, &url);
    let store = Store::open(&url, StoreOptions::new(StoreKey::from_hex(KEY).unwrap()))
        .await
        .unwrap_or_else(|error| panic!("cannot open {url}: {error:?}"));
    test(Operator { config, config_path, store }).await;
}
