//! Ready-made workflow templates; so far the reference case of design.md §2: check the credit
//! limit → approval required → a task for the CFO, otherwise approve automatically.

use std::time::Duration;

use indexmap::IndexMap;
use serde_json::{Value, json};

use crate::template::{
    ActivityStep, CompareOp, Condition, IfElseStep, LogStep, SetFieldStep, Step, TaskOutcome,
    TaskStep, TemplateField, WorkflowTemplate,
};

/// The name of the credit-limit activity step (`{=check_credit_limit:available_limit}`).
pub const CHECK_STEP: &str = "check_credit_limit";
/// The name of the CFO's task step (`{=cfo_approval:outcome}`).
pub const CFO_TASK_STEP: &str = "cfo_approval";
/// The constant holding the approved stage (`{=Constant:ApprovedStage}`).
pub const APPROVED_STAGE: &str = "ApprovedStage";
/// The constant holding the rejected stage.
pub const REJECTED_STAGE: &str = "RejectedStage";
/// The variable naming the CFO (`{=Variable:Approver}`, `user_<cfo_user_id>`).
pub const APPROVER: &str = "Approver";

/// The credit-approval process, with its knobs. [`CreditApproval::template`] builds:
///
/// 1. activity `check_credit_limit` (the given code) with `company_id = {=Document:COMPANY_ID}`
///    and `amount = {=Document:OPPORTUNITY}`;
/// 2. if its `approval_required` is `N` (or `false`): `STAGE_ID` = the approved stage, and a
///    log line with the available limit;
/// 3. otherwise (`Y`, or no answer at all, e.g. after the activity's timeout: the process fails
///    closed): a log line with the reason, a task `cfo_approval` for the CFO, then `STAGE_ID` =
///    the approved or the rejected stage by the task's outcome, and a log line.
///
/// The stages are the template's constants `ApprovedStage` and `RejectedStage`
/// (`{=Constant:ApprovedStage}`), and the CFO is also its variable `Approver` (`user_7`), so
/// the action's settings form has a constant and a variable to offer besides document fields.
#[derive(Debug, Clone, PartialEq)]
pub struct CreditApproval {
    /// The registered CODE of the credit-limit action.
    pub code: String,
    /// When several apps registered `code`, which one.
    pub client_id: Option<String>,
    /// The CFO's user ID (default 7).
    pub cfo_user_id: u64,
    /// Completes the CFO's task by itself after this long; `None` = only through the control API.
    pub auto_complete_after: Option<Duration>,
    /// The outcome of that automatic completion (default approved).
    pub auto_outcome: TaskOutcome,
    /// The activity's timeout in seconds; 0 = wait forever (§2.7).
    pub timeout_duration: u64,
    /// `STAGE_ID` of an approved request (default `APPROVED`).
    pub approved_stage: String,
    /// `STAGE_ID` of a rejected request (default `REJECTED`).
    pub rejected_stage: String,
}

impl CreditApproval {
    /// The defaults for an action registered as `code`.
    pub fn new(code: impl Into<String>) -> CreditApproval {
        CreditApproval {
            code: code.into(),
            client_id: None,
            cfo_user_id: 7,
            auto_complete_after: None,
            auto_outcome: TaskOutcome::Approved,
            timeout_duration: 0,
            approved_stage: "APPROVED".into(),
            rejected_stage: "REJECTED".into(),
        }
    }

    /// The template for deals (`["crm", "CCrmDocumentDeal", "DEAL"]`).
    pub fn template(&self) -> WorkflowTemplate {
        let set_stage = |constant: &str| {
            let value = json!(format!("{{=Constant:{constant}}}"));
            Step::SetField(SetFieldStep { field: "STAGE_ID".into(), value })
        };
        let field = |name: &str, field_type: &str, default: Value| TemplateField {
            name: name.into(),
            field_type: field_type.into(),
            default,
            ..TemplateField::default()
        };
        let constants = IndexMap::from([
            (
                APPROVED_STAGE.to_owned(),
                field("Approved stage", "string", json!(self.approved_stage)),
            ),
            (
                REJECTED_STAGE.to_owned(),
                field("Rejected stage", "string", json!(self.rejected_stage)),
            ),
        ]);
        let approver = field("Approver", "user", json!(format!("user_{}", self.cfo_user_id)));
        let variables = IndexMap::from([(APPROVER.to_owned(), approver)]);
        let log = |message: &str| Step::Log(LogStep { message: message.into() });
        let mut properties = serde_json::Map::new();
        properties.insert("company_id".into(), json!("{=Document:COMPANY_ID}"));
        properties.insert("amount".into(), json!("{=Document:OPPORTUNITY}"));
        let check = Step::Activity(ActivityStep {
            name: CHECK_STEP.into(),
            code: self.code.clone(),
            client_id: self.client_id.clone(),
            properties,
            timeout_duration: self.timeout_duration,
            use_subscription: Some(true),
            run_as_user: None,
        });
        let cfo_task = Step::Task(TaskStep {
            name: CFO_TASK_STEP.into(),
            user_id: self.cfo_user_id,
            title: "Approve shipment: {=Document:TITLE}".into(),
            description: "Amount {=Document:OPPORTUNITY}, available limit \
                          {=check_credit_limit:available_limit}. {=check_credit_limit:reason}"
                .into(),
            auto_complete_after: self.auto_complete_after,
            auto_outcome: self.auto_outcome,
        });
        let cfo_decision = if_equals(
            "cfo_decision",
            "{=cfo_approval:outcome}",
            "approved",
            vec![set_stage(APPROVED_STAGE), log("Approved by the CFO")],
            vec![set_stage(REJECTED_STAGE), log("Rejected by the CFO: {=cfo_approval:comment}")],
        );
        let decision = if_equals(
            "approval_required",
            "{=check_credit_limit:approval_required}",
            "N",
            vec![
                set_stage(APPROVED_STAGE),
                log(
                    "Approved automatically: available limit {=check_credit_limit:available_limit}",
                ),
            ],
            vec![log("Approval required: {=check_credit_limit:reason}"), cfo_task, cfo_decision],
        );
        WorkflowTemplate {
            name: "Credit approval".into(),
            document_type: crate::template::deal_type(),
            variables,
            constants,
            steps: vec![check, decision],
            ..WorkflowTemplate::default()
        }
    }
}

/// An If-Then-Else step `name`: `then` when `operand` renders equal to `value`, else `otherwise`.
fn if_equals(
    name: &str,
    operand: &str,
    value: &str,
    then: Vec<Step>,
    otherwise: Vec<Step>,
) -> Step {
    Step::IfElse(IfElseStep {
        name: name.into(),
        condition: Condition { operand: operand.into(), op: CompareOp::Eq, value: json!(value) },
        then,
        otherwise,
    })
}

/// [`CreditApproval::new`]`(code).template()`: the CFO is user 7 and completes the task by hand.
pub fn credit_approval(code: &str) -> WorkflowTemplate {
    CreditApproval::new(code).template()
}
