//! A portal's registrations kept in step with the configuration. What the portal lists for this
//! app (`bizproc.activity.list` / `bizproc.robot.list`: codes only, docs/protocol.md §1.4)
//! against the configured actions gives a [`Plan`] — add, update, delete, unchanged — which the
//! host applies at start and after an install, and `b24act sync` prints and applies. The list
//! is per app, so only codes this app registered are ever deleted. Since the portal gives no
//! details, a registration is `unchanged` when the fingerprint recorded when it was made is the
//! configured one; without a record it is updated, and the plan says it could not compare.

use std::collections::HashMap;
use std::fmt;

use b24::incoming::quoted;
use b24::report::ErrorChain;
use b24::rest::{ActionKind, ActivityChanges, ActivityDefinition, ErrorClass, RestClient};
use sha2::{Digest, Sha256};

use crate::Host;
use crate::install::registrations_fingerprint;
use crate::portals::PortalError;

/// The portal's error for an `add` whose code this app already registered (§1.7).
const ALREADY_INSTALLED: &str = "ERROR_ACTIVITY_ALREADY_INSTALLED";
/// The portal's error for an `update` or `delete` of a code it does not have (§1.7).
const NOT_FOUND: &str = "ERROR_ACTIVITY_NOT_FOUND";

/// A configured action as a registration: its kind, definition and their fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub kind: ActionKind,
    pub definition: ActivityDefinition,
    /// [`fingerprint`] of the kind and definition.
    pub fingerprint: String,
}

impl Wanted {
    pub fn new(kind: ActionKind, definition: ActivityDefinition) -> Wanted {
        let fingerprint = fingerprint(kind, &definition);
        Wanted { kind, definition, fingerprint }
    }

    fn code(&self) -> &str {
        &self.definition.code
    }
}

/// Every configured action as a registration on this host's public URL, in declared order.
pub fn wanted(host: &Host) -> Vec<Wanted> {
    host.catalog
        .iter()
        .map(|action| {
            let (kind, definition) = action.definition(&host.config.app.public_url);
            Wanted::new(kind, definition)
        })
        .collect()
}

/// A hash of what a registration says to the portal: its kind and its definition, handler URL
/// included. Recorded per portal and code when the registration is made.
pub fn fingerprint(kind: ActionKind, definition: &ActivityDefinition) -> String {
    // A definition always serializes (strings, numbers and maps only).
    let text = serde_json::to_string(definition).unwrap_or_default();
    hex(Sha256::digest(format!("{kind:?}\n{text}\n").as_bytes()).as_slice())
}

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The codes a portal lists for this app, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    pub activities: Vec<String>,
    pub robots: Vec<String>,
}

impl Listed {
    fn of(&self, kind: ActionKind) -> &[String] {
        match kind {
            ActionKind::Activity => &self.activities,
            ActionKind::Robot => &self.robots,
        }
    }

    fn all(&self) -> impl Iterator<Item = (ActionKind, &String)> {
        let activities = self.activities.iter().map(|code| (ActionKind::Activity, code));
        activities.chain(self.robots.iter().map(|code| (ActionKind::Robot, code)))
    }
}

/// Why a registered code is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// No configured action has the code.
    Removed,
    /// The code is configured as the other kind; activities and robots share one namespace per
    /// app (§1.1), so the old one goes before the new one is added.
    KindChanged,
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Configured, not registered: `bizproc.*.add`.
    Add(Wanted),
    /// Configured and registered: `bizproc.*.update`. `compared` is false when no fingerprint
    /// was recorded for it, so whether it differs cannot be told.
    Update { wanted: Wanted, compared: bool },
    /// Configured, registered with the recorded fingerprint of the configured definition.
    Unchanged { kind: ActionKind, code: String },
    /// Registered by this app, not configured as it is: `bizproc.*.delete`.
    Delete { kind: ActionKind, code: String, why: Removal },
    /// Registered by this app, no longer configured, kept by `app.keep_removed_actions`.
    Keep { kind: ActionKind, code: String },
}

impl Step {
    /// The action's code.
    pub fn code(&self) -> &str {
        match self {
            Step::Add(wanted) | Step::Update { wanted, .. } => wanted.code(),
            Step::Unchanged { code, .. } | Step::Delete { code, .. } | Step::Keep { code, .. } => {
                code
            }
        }
    }

    /// The registration's kind.
    pub fn kind(&self) -> ActionKind {
        match self {
            Step::Add(wanted) | Step::Update { wanted, .. } => wanted.kind,
            Step::Unchanged { kind, .. } | Step::Delete { kind, .. } | Step::Keep { kind, .. } => {
                *kind
            }
        }
    }

    /// The verb the plan prints: `add`, `update`, `delete`, `unchanged` or `keep`.
    pub fn verb(&self) -> &'static str {
        match self {
            Step::Add(_) => "add",
            Step::Update { .. } => "update",
            Step::Unchanged { .. } => "unchanged",
            Step::Delete { .. } => "delete",
            Step::Keep { .. } => "keep",
        }
    }

    /// Why, when the verb alone does not say it.
    pub fn note(&self) -> Option<&'static str> {
        match self {
            Step::Update { compared: false, .. } => {
                Some("cannot compare: the portal lists codes only, and none was recorded here")
            }
            Step::Delete { why: Removal::Removed, .. } => Some("removed from the configuration"),
            Step::Delete { why: Removal::KindChanged, .. } => {
                Some("configured as the other kind now")
            }
            Step::Keep { .. } => {
                Some("removed from the configuration; kept by app.keep_removed_actions")
            }
            Step::Add(_) | Step::Update { compared: true, .. } | Step::Unchanged { .. } => None,
        }
    }

    /// Whether applying it calls the portal.
    pub fn is_change(&self) -> bool {
        matches!(self, Step::Add(_) | Step::Update { .. } | Step::Delete { .. })
    }
}

/// `add CODE`, `update CODE`, … with the kind and the note: `delete old (activity; removed from
/// the configuration)`.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A code to delete comes from the portal's own list: escaped, as any input shown.
        write!(f, "{} {} ({}", self.verb(), quoted(self.code()), kind_name(self.kind()))?;
        if let Some(note) = self.note() {
            write!(f, "; {note}")?;
        }
        f.write_str(")")
    }
}

/// `activity` or `robot`.
pub fn kind_name(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Activity => "activity",
        ActionKind::Robot => "robot",
    }
}

/// What to do on one portal to make it match the configuration: deletions first (a code that
/// changed kind must go before it can be added again), then each configured action in declared
/// order, then the kept ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    /// The plan for a portal listing `listed`, where `recorded` holds the fingerprint each code
    /// was last registered with. With `keep_removed`, codes no longer configured stay.
    pub fn new(
        wanted: &[Wanted],
        listed: &Listed,
        recorded: &HashMap<String, String>,
        keep_removed: bool,
    ) -> Plan {
        let configured = |code: &str| wanted.iter().find(|w| w.code() == code);
        let mut deletions = Vec::new();
        let mut kept = Vec::new();
        for (kind, code) in listed.all() {
            let (code, kind) = (code.clone(), kind);
            match configured(&code) {
                Some(w) if w.kind == kind => {}
                Some(_) => deletions.push(Step::Delete { kind, code, why: Removal::KindChanged }),
                None if keep_removed => kept.push(Step::Keep { kind, code }),
                None => deletions.push(Step::Delete { kind, code, why: Removal::Removed }),
            }
        }
        let configured_steps = wanted.iter().map(|w| {
            if !listed.of(w.kind).iter().any(|code| code == w.code()) {
                return Step::Add(w.clone());
            }
            match recorded.get(w.code()) {
                Some(stored) if *stored == w.fingerprint => {
                    Step::Unchanged { kind: w.kind, code: w.code().to_owned() }
                }
                stored => Step::Update { wanted: w.clone(), compared: stored.is_some() },
            }
        });
        let mut steps = deletions;
        steps.extend(configured_steps);
        steps.extend(kept);
        Plan { steps }
    }

    /// How many steps call the portal.
    pub fn changes(&self) -> usize {
        self.steps.iter().filter(|step| step.is_change()).count()
    }
}

/// Why a portal's registrations could not be planned or a step not applied.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("no client for the portal")]
    Portal(#[from] PortalError),
    #[error("listing this app's registrations")]
    List(#[source] b24::rest::Error),
    #[error("reading the recorded registrations")]
    Store(#[from] store::Error),
    #[error("{verb} `{code}`")]
    Rest {
        verb: &'static str,
        code: String,
        #[source]
        source: b24::rest::Error,
    },
}

impl RegistrationError {
    /// Whether trying again later may succeed (rate limits, 5xx, an unreachable portal).
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistrationError::List(source) | RegistrationError::Rest { source, .. } => {
                source.class() == ErrorClass::Retryable
            }
            RegistrationError::Portal(_) | RegistrationError::Store(_) => false,
        }
    }

    /// The portal's own error string (`ERROR_WRONG_HANDLER_URL: Wrong handler URL`), when it
    /// answered with one.
    pub fn portal_error(&self) -> Option<String> {
        match self {
            RegistrationError::List(source) | RegistrationError::Rest { source, .. } => {
                source.api_error().map(ToString::to_string)
            }
            RegistrationError::Portal(_) | RegistrationError::Store(_) => None,
        }
    }
}

/// A portal's plan, with the client to apply it through (paced by the portal's request budget).
pub struct PortalPlan {
    pub member_id: String,
    pub plan: Plan,
    client: RestClient,
}

/// Lists what portal `member_id` has registered for this app and plans what makes it match the
/// configuration. Two requests (`bizproc.activity.list`, `bizproc.robot.list`); nothing changes.
pub async fn plan(host: &Host, member_id: &str) -> Result<PortalPlan, RegistrationError> {
    let client = host.portals.client(member_id).await?;
    let list = async |kind| client.action_list(kind).await.map(|response| response.result);
    let listed = Listed {
        activities: list(ActionKind::Activity).await.map_err(RegistrationError::List)?,
        robots: list(ActionKind::Robot).await.map_err(RegistrationError::List)?,
    };
    let recorded = host.store.action_registrations(member_id).await?;
    let keep_removed = host.config.app.keep_removed_actions;
    let plan = Plan::new(&wanted(host), &listed, &recorded, keep_removed);
    Ok(PortalPlan { member_id: member_id.to_owned(), plan, client })
}

/// A step and how applying it went.
pub struct Applied {
    pub step: Step,
    pub outcome: Result<(), RegistrationError>,
}

impl PortalPlan {
    /// Applies every change in order, each one whatever became of the one before, and records
    /// each registration made or deleted. When all succeeded, the portal's fingerprint is
    /// recorded too (a start with the same configuration then spends no request there).
    /// Returns every step with its outcome (unchanged and kept ones succeed without a request).
    pub async fn apply(mut self, host: &Host) -> Vec<Applied> {
        let steps = std::mem::take(&mut self.plan.steps);
        let mut applied = Vec::with_capacity(steps.len());
        for step in steps {
            let outcome = self.apply_step(host, &step).await;
            match &outcome {
                Ok(()) if step.is_change() => {
                    tracing::info!(portal = %self.member_id, code = step.code(), kind = kind_name(step.kind()), change = step.verb(), "registration changed");
                }
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(portal = %self.member_id, code = step.code(), change = step.verb(), error = %ErrorChain(error), "registration change failed");
                }
            }
            applied.push(Applied { step, outcome });
        }
        if applied.iter().all(|a| a.outcome.is_ok()) {
            let fingerprint = registrations_fingerprint(host);
            if let Err(error) = host.store.set_registrations(&self.member_id, &fingerprint).await {
                tracing::warn!(portal = %self.member_id, error = %ErrorChain(&error),
                    "registrations made but not recorded; the next start makes them again");
            }
        }
        applied
    }

    async fn apply_step(&self, host: &Host, step: &Step) -> Result<(), RegistrationError> {
        let client = &self.client;
        let failed = |verb, code: &str| {
            let code = code.to_owned();
            move |source| RegistrationError::Rest { verb, code, source }
        };
        let recorded = match step {
            Step::Add(wanted) => {
                let update = ActivityChanges::from(&wanted.definition);
                match client.action_add(wanted.kind, &wanted.definition).await {
                    Ok(_) => {}
                    // Another node added it since the list: bring it in line instead.
                    Err(e) if e.code() == Some(ALREADY_INSTALLED) => {
                        client
                            .action_update(wanted.kind, wanted.code(), &update)
                            .await
                            .map_err(failed("update", wanted.code()))?;
                    }
                    Err(e) => return Err(failed("add", wanted.code())(e)),
                }
                Some(wanted.fingerprint.as_str())
            }
            Step::Update { wanted, .. } => {
                let update = ActivityChanges::from(&wanted.definition);
                client
                    .action_update(wanted.kind, wanted.code(), &update)
                    .await
                    .map_err(failed("update", wanted.code()))?;
                Some(wanted.fingerprint.as_str())
            }
            Step::Delete { kind, code, .. } => {
                match client.action_delete(*kind, code).await {
                    // Gone already (another node, or the portal's own wipe): what was wanted.
                    Err(e) if e.code() != Some(NOT_FOUND) => {
                        return Err(failed("delete", code)(e));
                    }
                    _ => None,
                }
            }
            Step::Unchanged { .. } | Step::Keep { .. } => return Ok(()),
        };
        if let Err(error) =
            host.store.set_action_registration(&self.member_id, step.code(), recorded).await
        {
            tracing::warn!(portal = %self.member_id, code = step.code(), error = %ErrorChain(&error),
                "registration changed but not recorded; the next sync updates it again");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(kind: ActionKind, code: &str, name: &str) -> Wanted {
        Wanted::new(kind, ActivityDefinition::new(code, format!("https://h.example/{code}"), name))
    }

    fn listed(activities: &[&str], robots: &[&str]) -> Listed {
        let owned = |codes: &[&str]| codes.iter().map(|c| (*c).to_owned()).collect();
        Listed { activities: owned(activities), robots: owned(robots) }
    }

    fn lines(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(|step| format!("{} {}", step.verb(), step.code())).collect()
    }

    #[test]
    fn a_portal_without_registrations_gets_every_action_added_in_declared_order() {
        let config = [wanted(ActionKind::Robot, "b", "B"), wanted(ActionKind::Activity, "a", "A")];
        let plan = Plan::new(&config, &Listed::default(), &HashMap::new(), false);
        assert_eq!(lines(&plan), ["add b", "add a"]);
        assert_eq!(plan.changes(), 2);
        assert_eq!(plan.steps[0], Step::Add(config[0].clone()));
    }

    #[test]
    fn a_registered_action_is_unchanged_only_when_its_recorded_fingerprint_is_the_configured_one() {
        let config = [
            wanted(ActionKind::Activity, "same", "Same"),
            wanted(ActionKind::Activity, "changed", "Changed v2"),
            wanted(ActionKind::Robot, "unknown", "Unknown"),
        ];
        let recorded = HashMap::from([
            ("same".to_owned(), config[0].fingerprint.clone()),
            ("changed".to_owned(), wanted(ActionKind::Activity, "changed", "v1").fingerprint),
        ]);
        let plan =
            Plan::new(&config, &listed(&["same", "changed"], &["unknown"]), &recorded, false);
        assert_eq!(lines(&plan), ["unchanged same", "update changed", "update unknown"]);
        assert_eq!(plan.steps[1], Step::Update { wanted: config[1].clone(), compared: true });
        assert_eq!(plan.steps[2], Step::Update { wanted: config[2].clone(), compared: false });
        assert_eq!(
            plan.steps[2].to_string(),
            "update unknown (robot; cannot compare: the portal lists codes only, and none was \
             recorded here)"
        );
        assert_eq!(plan.changes(), 2);
    }

    #[test]
    fn a_kind_changes_fingerprint_and_a_handler_does_too() {
        let activity = wanted(ActionKind::Activity, "a", "A");
        assert_ne!(activity.fingerprint, wanted(ActionKind::Robot, "a", "A").fingerprint);
        let mut moved = activity.definition.clone();
        moved.handler = "https://other.example/a".into();
        assert_ne!(activity.fingerprint, fingerprint(ActionKind::Activity, &moved));
        assert_eq!(activity.fingerprint, wanted(ActionKind::Activity, "a", "A").fingerprint);
    }

    #[test]
    fn codes_no_longer_configured_are_deleted_first_or_kept_when_asked() {
        let config = [wanted(ActionKind::Activity, "new", "New")];
        let portal = listed(&["old"], &["old_robot"]);
        let plan = Plan::new(&config, &portal, &HashMap::new(), false);
        assert_eq!(lines(&plan), ["delete old", "delete old_robot", "add new"]);
        assert_eq!(
            plan.steps[1],
            Step::Delete {
                kind: ActionKind::Robot,
                code: "old_robot".into(),
                why: Removal::Removed
            }
        );
        assert_eq!(
            plan.steps[0].to_string(),
            "delete old (activity; removed from the configuration)"
        );

        let kept = Plan::new(&config, &portal, &HashMap::new(), true);
        assert_eq!(lines(&kept), ["add new", "keep old", "keep old_robot"]);
        assert_eq!(kept.changes(), 1);
    }

    #[test]
    fn a_code_that_changed_kind_is_deleted_then_added_even_when_removed_ones_are_kept() {
        let config = [wanted(ActionKind::Robot, "a", "A")];
        let recorded = HashMap::from([("a".to_owned(), config[0].fingerprint.clone())]);
        for keep_removed in [false, true] {
            let plan = Plan::new(&config, &listed(&["a"], &[]), &recorded, keep_removed);
            assert_eq!(lines(&plan), ["delete a", "add a"], "keep_removed = {keep_removed}");
            assert_eq!(
                plan.steps[0],
                Step::Delete {
                    kind: ActionKind::Activity,
                    code: "a".into(),
                    why: Removal::KindChanged
                }
            );
        }
    }

    #[test]
    fn a_portal_matching_the_configuration_needs_nothing() {
        let config = [wanted(ActionKind::Activity, "a", "A"), wanted(ActionKind::Robot, "b", "B")];
        let recorded = config.iter().map(|w| (w.code().to_owned(), w.fingerprint.clone()));
        let plan = Plan::new(&config, &listed(&["a"], &["b"]), &recorded.collect(), false);
        assert_eq!(lines(&plan), ["unchanged a", "unchanged b"]);
        assert_eq!(plan.changes(), 0);
        assert_eq!(plan.steps[1].to_string(), "unchanged b (robot)");
    }
}
