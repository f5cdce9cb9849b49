//! Running an activity: finding its registration, building the handler call exactly as
//! Bitrix24 sends it (field order §2.2, payload §2.3, value serialization §2.4, signed token
//! §3.4) and delivering it in the background with the portal's faults applied. Single-activity
//! workflows and template steps both come through here, from [`crate::engine`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;

use crate::app::{self, EVENT_TIMEOUT, USER_AGENT};
use crate::clock;
use crate::error::{EmulatorError, error_chain};
use crate::event_token::{self, TokenParts};
use crate::ids;
use crate::oauth;
use crate::param::{Array, Param, php_number, to_form_array};
use crate::portal::PortalState;
use crate::registry::{self, Registration};
use crate::state::{Shared, State};
use crate::template::ActivityStep;
use crate::workflow::{ActivityRun, Delivery, WorkflowStatus};

/// The gap before the first resend in `retry_non_2xx` mode; doubles per attempt.
const RETRY_BASE: Duration = Duration::from_millis(200);

/// How the background task delivers one call.
pub(crate) struct Plan {
    portal: usize,
    workflow_id: String,
    /// The index of the activity run in the workflow.
    activity: usize,
    url: String,
    body: String,
    delay: Duration,
    drop: bool,
    copies: u32,
    retries: u32,
}

/// Starts deliveries in the background.
pub(crate) fn spawn_deliveries(shared: &Arc<Shared>, plans: Vec<Plan>) {
    for plan in plans {
        tracing::info!(workflow_id = plan.workflow_id, handler = plan.url, "dispatching");
        let shared = shared.clone();
        tokio::spawn(async move { deliver(&shared, plan).await });
    }
}

/// The one registration `code` names on the portal, and its app's `application_token`.
pub(crate) fn resolve(
    p: &PortalState,
    code: &str,
    client_id: Option<&str>,
) -> Result<(Registration, String), EmulatorError> {
    let matches: Vec<&Registration> = p
        .registry
        .all()
        .filter(|r| r.code == code)
        .filter(|r| client_id.is_none_or(|c| c == r.client_id))
        .collect();
    let reg = match matches.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(EmulatorError::UnknownCode { domain: p.domain.clone(), code: code.into() });
        }
        _ => {
            return Err(EmulatorError::AmbiguousCode {
                domain: p.domain.clone(),
                code: code.into(),
            });
        }
    };
    let application_token = p
        .installs
        .get(&reg.client_id)
        .filter(|i| i.installed)
        .map(|i| i.application_token.clone())
        .ok_or_else(|| EmulatorError::not_installed(&p.domain, &reg.client_id))?;
    Ok((reg, application_token))
}

/// What the call is about besides the step itself.
pub(crate) struct CallContext<'a> {
    pub(crate) workflow_id: &'a str,
    /// The index the new run will have in the workflow's activities.
    pub(crate) activity: usize,
    pub(crate) document_id: &'a [String],
    pub(crate) document_type: &'a [String],
}

/// Builds the call of one activity step with its evaluated `properties`: the run to record on
/// the workflow and the plan to deliver it.
pub(crate) fn build(
    shared: &Shared,
    state: &mut State,
    portal: usize,
    step: &ActivityStep,
    properties_given: &serde_json::Value,
    cx: &CallContext<'_>,
) -> Result<(ActivityRun, Plan), EmulatorError> {
    let p = state
        .portals
        .get(portal)
        .ok_or_else(|| EmulatorError::UnknownPortal(portal.to_string()))?;
    let (reg, application_token) = resolve(p, &step.code, step.client_id.as_deref())?;
    let faults = p.faults.clone();
    let parts = TokenParts {
        workflow_id: cx.workflow_id.to_owned(),
        activity_name: step.name.clone(),
        event_id: ids::event_id(),
    };
    let event_token = event_token::sign(&p.signer_key, &parts);

    // §2.7: 'Y' only if the registration says exactly 'Y'; an empty value is the admin's choice.
    let use_subscription = match reg.use_subscription.as_str() {
        "Y" => true,
        "" => step.use_subscription.unwrap_or(false),
        _ => false,
    };
    let run_as = step.run_as_user.unwrap_or(u64::try_from(reg.auth_user_id).unwrap_or(0));
    let tokens = if run_as > 0 && !faults.omit_tokens {
        Some(oauth::issue(shared, state, portal, &reg.client_id, run_as)?)
    } else {
        None
    };

    let mut form = Array::new();
    form.insert("workflow_id".into(), Param::str(&parts.workflow_id));
    form.insert("code".into(), Param::str(&reg.code));
    form.insert("document_id".into(), Param::list(cx.document_id.iter().map(Param::str)));
    form.insert("document_type".into(), Param::list(cx.document_type.iter().map(Param::str)));
    form.insert("event_token".into(), Param::str(&event_token));
    form.insert("properties".into(), properties(&reg, properties_given));
    form.insert("use_subscription".into(), Param::str(if use_subscription { "Y" } else { "N" }));
    form.insert("timeout_duration".into(), Param::str(step.timeout_duration.to_string()));
    form.insert("ts".into(), Param::str(clock::unix_secs(SystemTime::now()).to_string()));
    let mut auth =
        app::event_auth(shared, &state.portals[portal], tokens.as_ref(), &application_token);
    if faults.omit_refresh_token {
        auth.shift_remove("refresh_token");
    }
    form.insert("auth".into(), Param::Array(auth));
    let body = phpform::encode(&to_form_array(&form));

    let now = Instant::now();
    let run = ActivityRun {
        code: reg.code.clone(),
        activity_name: parts.activity_name.clone(),
        event_id: parts.event_id.clone(),
        event_token,
        use_subscription,
        timeout_duration: step.timeout_duration,
        started: now,
        started_at: SystemTime::now(),
        // USE_SUBSCRIPTION=N closes the activity right after dispatch (§2.6).
        status: if use_subscription { WorkflowStatus::Waiting } else { WorkflowStatus::Closed },
        closed_at: (!use_subscription).then_some(now),
        return_properties: reg.return_properties.clone(),
        return_values: Array::new(),
        deliveries: Vec::new(),
        handler: reg.handler.clone(),
        body: body.clone(),
    };

    let jitter = if faults.call_jitter.is_zero() {
        Duration::ZERO
    } else {
        rand::rng().random_range(Duration::ZERO..=faults.call_jitter)
    };
    let plan = Plan {
        portal,
        workflow_id: parts.workflow_id,
        activity: cx.activity,
        url: reg.handler,
        body,
        delay: faults.call_delay + jitter,
        drop: faults.drop_calls,
        copies: if faults.duplicate_calls { 2 } else { 1 },
        retries: faults.retry_non_2xx,
    };
    Ok((run, plan))
}

/// `properties[...]` in registration order; a value of an empty list vanishes when encoded.
fn properties(reg: &Registration, given: &serde_json::Value) -> Param {
    let given = given.as_object();
    let mut out = Array::new();
    for (id, definition) in &reg.properties {
        let empty = Array::new();
        let definition = definition.as_array().unwrap_or(&empty);
        let value = match given.and_then(|g| g.get(id)) {
            Some(v) => Param::from_json(v),
            None => definition.get("DEFAULT").cloned().unwrap_or(Param::Null),
        };
        out.insert(id.clone(), externalize(definition, value));
    }
    Param::Array(out)
}

/// §2.4: converts the designer's value the way the handler receives it. Truthy values are
/// externalized by type; a multiple property wraps a scalar into a list; `null` becomes `''`.
fn externalize(definition: &Array, value: Param) -> Param {
    let ty = registry::property_type(definition);
    let multiple = registry::property_flag(definition, "MULTIPLE");
    match value {
        Param::Array(items) => Param::list(items.into_values().map(|v| scalar(&ty, v))),
        v if multiple && v.truthy() => Param::list([scalar(&ty, v)]),
        v => scalar(&ty, v),
    }
}

/// One scalar as a form string, by property type.
fn scalar(ty: &str, value: Param) -> Param {
    let text = match (ty, value) {
        (_, Param::Null) => String::new(),
        ("bool", Param::Bool(b)) => if b { "Y" } else { "N" }.to_owned(),
        ("bool", Param::Num(n)) => if n.as_f64() == Some(0.0) { "N" } else { "Y" }.to_owned(),
        ("user", Param::Num(n)) => format!("user_{}", php_number(&n)),
        ("user", Param::Str(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            format!("user_{s}")
        }
        (_, Param::Bool(b)) => if b { "1" } else { "0" }.to_owned(),
        (_, Param::Num(n)) => php_number(&n),
        (_, Param::Str(s)) => s,
        (_, Param::Array(a)) => return Param::Array(a),
    };
    Param::Str(text)
}

/// Sends the call (after any delay), honouring drop / duplicate / retry faults, and records
/// every attempt on the workflow. The handler's answer is otherwise ignored (§2.2).
async fn deliver(shared: &Arc<Shared>, plan: Plan) {
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    if plan.drop {
        record(shared, &plan, None, Some("dropped by fault injection".to_owned()));
        tracing::info!(workflow_id = plan.workflow_id, "activity call dropped (fault)");
        return;
    }
    for _ in 0..plan.copies {
        let mut backoff = RETRY_BASE;
        for attempt in 0..=plan.retries {
            let sent = {
                // Never closed, so acquiring cannot fail (a closed one would mean no bound).
                let _slot = shared.dispatch_slots.acquire().await.ok();
                shared
                    .http
                    .post(&plan.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(reqwest::header::USER_AGENT, USER_AGENT)
                    .timeout(EVENT_TIMEOUT)
                    .body(plan.body.clone())
                    .send()
                    .await
            };
            let ok = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    // Read to the end so the connection goes back to the pool for the next call.
                    let _ = resp.bytes().await;
                    record(shared, &plan, Some(status.as_u16()), None);
                    status.is_success()
                }
                Err(e) => {
                    let error = error_chain(&e);
                    tracing::warn!(workflow_id = plan.workflow_id, error, "activity call failed");
                    record(shared, &plan, None, Some(error));
                    false
                }
            };
            if ok || attempt == plan.retries {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}

fn record(shared: &Shared, plan: &Plan, status: Option<u16>, error: Option<String>) {
    let mut state = shared.lock();
    let run = state
        .portals
        .get_mut(plan.portal)
        .and_then(|p| p.workflows.get_mut(&plan.workflow_id))
        .and_then(|wf| wf.activities.get_mut(plan.activity));
    if let Some(run) = run {
        run.deliveries.push(Delivery { at: SystemTime::now(), status, error });
    }
}
