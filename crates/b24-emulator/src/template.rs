//! Workflow templates as the BP designer builds them, in a small subset: a REST activity,
//! If-Then-Else, a task for a user, setting a document field, and a log line. A template is
//! validated when it is stored and compiled into a flat program (branches become jumps) that
//! [`crate::engine`] runs.
//!
//! Expressions (`{=Document:FIELD}`, `{=step:value}`) are described in [`crate::expr`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::error::EmulatorError;
use crate::expr::{self, Expression};
use crate::ids;

/// A business-process template for one document type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkflowTemplate {
    /// Assigned by [`crate::Emulator::create_template`] (a portal-wide number, like Bitrix24's
    /// `TEMPLATE_ID`); any value given on creation is ignored.
    pub id: u64,
    pub name: String,
    /// `[module, entity, type]`, e.g. `["crm", "CCrmDocumentDeal", "DEAL"]`; the template runs
    /// only on documents of this type.
    pub document_type: Vec<String>,
    pub steps: Vec<Step>,
}

impl Default for WorkflowTemplate {
    fn default() -> Self {
        Self { id: 0, name: String::new(), document_type: deal_type(), steps: Vec::new() }
    }
}

/// `["crm", "CCrmDocumentDeal", "DEAL"]`
pub(crate) fn deal_type() -> Vec<String> {
    ["crm", "CCrmDocumentDeal", "DEAL"].map(str::to_owned).to_vec()
}

/// One step of a template. On the control API: `{"type": "activity", …}` and so on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    Activity(ActivityStep),
    IfElse(IfElseStep),
    Task(TaskStep),
    SetField(SetFieldStep),
    Log(LogStep),
}

/// Runs a registered REST activity or robot, exactly as a single-activity workflow does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivityStep {
    /// The designer's activity name: what `{=name:value}` refers to and the middle part of the
    /// `event_token` (§3.4). Generated in the designer's `A12345_…` shape when empty.
    pub name: String,
    /// The registered CODE.
    pub code: String,
    /// When several apps registered `code`, which one (the designer stores `rest_<md5>` of
    /// `client_id@CODE`, so a template is bound to one app, §1.1).
    pub client_id: Option<String>,
    /// Property values by property ID; strings may hold expressions.
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// The designer's timeout in seconds; 0 = wait forever (§2.7).
    pub timeout_duration: u64,
    /// The admin's choice when the registration's USE_SUBSCRIPTION is empty (§2.7).
    pub use_subscription: Option<bool>,
    /// The "Run as" user; default the registration's AUTH_USER_ID.
    pub run_as_user: Option<u64>,
}

/// If-Then-Else on one condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IfElseStep {
    /// A label for the step records; optional.
    pub name: String,
    pub condition: Condition,
    pub then: Vec<Step>,
    pub otherwise: Vec<Step>,
}

/// `operand op value`, where `operand` is one expression such as `{=check:approval_required}`.
/// The default is an empty operand with `is_true`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub operand: String,
    pub op: CompareOp,
    /// The right-hand side (unused by `is_true`, `empty`, `not_empty`).
    #[serde(default)]
    pub value: serde_json::Value,
}

/// How a condition compares; see [`crate::expr`] for the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<=")]
    Le,
    /// `Y`, `y`, `1`, `true` or a non-zero number (`CBPHelper::getBool`).
    #[serde(rename = "is_true")]
    #[default]
    IsTrue,
    #[serde(rename = "empty")]
    Empty,
    #[serde(rename = "not_empty")]
    NotEmpty,
}

/// A task for a user ("Approve document"): the workflow waits until it is completed through
/// the control API, or automatically after a delay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskStep {
    /// What `{=name:outcome}` refers to; generated when empty.
    pub name: String,
    /// The assignee's user ID (e.g. 7, shown as `user_7`).
    pub user_id: u64,
    /// May hold expressions.
    pub title: String,
    /// May hold expressions.
    pub description: String,
    /// Completes the task by itself this long after it was created; `None` = only by hand.
    #[serde(with = "clock::opt_secs")]
    pub auto_complete_after: Option<Duration>,
    /// The outcome of an automatic completion.
    pub auto_outcome: TaskOutcome,
}

impl Default for TaskStep {
    fn default() -> Self {
        Self {
            name: String::new(),
            user_id: 1,
            title: String::new(),
            description: String::new(),
            auto_complete_after: None,
            auto_outcome: TaskOutcome::Approved,
        }
    }
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    Approved,
    Rejected,
}

impl TaskOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskOutcome::Approved => "approved",
            TaskOutcome::Rejected => "rejected",
        }
    }
}

/// Sets one field of the workflow's document (e.g. `STAGE_ID`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFieldStep {
    pub field: String,
    /// A JSON value; strings may hold expressions.
    pub value: serde_json::Value,
}

/// Writes a line to the workflow's tracking log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogStep {
    /// May hold expressions.
    pub message: String,
}

/// A template as the portal keeps it, with what `bizproc.workflow.template.*` shows besides its
/// steps.
#[derive(Debug, Clone)]
pub(crate) struct StoredTemplate {
    pub(crate) template: WorkflowTemplate,
    pub(crate) program: Arc<Program>,
    /// The app that added it through REST; only that app may change or delete it. `None` for
    /// a template of the control API.
    pub(crate) owner: Option<String>,
    /// `rest_app_<app ID>` for an app's template, else empty.
    pub(crate) system_code: String,
    pub(crate) description: String,
    /// When it starts by itself: 0 never, 1 on create, 2 on change, 3 both.
    pub(crate) auto_execute: i64,
    /// Who stored it last (0 = the control API).
    pub(crate) user_id: u64,
    pub(crate) modified: SystemTime,
}

impl StoredTemplate {
    /// A template validated and compiled by [`prepare`], owned by nobody.
    pub(crate) fn new(template: WorkflowTemplate, program: Program) -> StoredTemplate {
        StoredTemplate {
            template,
            program: Arc::new(program),
            owner: None,
            system_code: String::new(),
            description: String::new(),
            auto_execute: 0,
            user_id: 0,
            modified: SystemTime::now(),
        }
    }
}

/// One instruction of a compiled template.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Activity(ActivityStep),
    /// Evaluates the condition; falls through to the `then` block or jumps to `otherwise`.
    Branch {
        name: String,
        condition: Condition,
        operand: Expression,
        otherwise: usize,
    },
    Jump(usize),
    Task(TaskStep),
    SetField(SetFieldStep),
    Log(LogStep),
}

/// A template flattened into instructions; the program counter is an index into `ops`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Program {
    pub(crate) ops: Vec<Op>,
}

impl Program {
    /// A one-activity program (what [`crate::Emulator::start_workflow`] runs).
    pub(crate) fn single(step: ActivityStep) -> Program {
        Program { ops: vec![Op::Activity(step)] }
    }

    fn emit(&mut self, steps: &[Step]) -> Result<(), EmulatorError> {
        for step in steps {
            match step {
                Step::Activity(a) => self.ops.push(Op::Activity(a.clone())),
                Step::Task(t) => self.ops.push(Op::Task(t.clone())),
                Step::SetField(s) => self.ops.push(Op::SetField(s.clone())),
                Step::Log(l) => self.ops.push(Op::Log(l.clone())),
                Step::IfElse(branch) => {
                    let operand = Expression::single(&branch.condition.operand)?;
                    let at = self.ops.len();
                    self.ops.push(Op::Jump(0));
                    self.emit(&branch.then)?;
                    let jump = self.ops.len();
                    self.ops.push(Op::Jump(0));
                    let otherwise = self.ops.len();
                    self.emit(&branch.otherwise)?;
                    let end = self.ops.len();
                    self.ops[at] = Op::Branch {
                        name: branch.name.clone(),
                        condition: branch.condition.clone(),
                        operand,
                        otherwise,
                    };
                    self.ops[jump] = Op::Jump(end);
                }
            }
        }
        Ok(())
    }
}

/// Names activity and task steps that have none, checks names, codes and expressions, and
/// compiles the template. The returned template is what gets stored.
pub(crate) fn prepare(
    mut template: WorkflowTemplate,
) -> Result<(WorkflowTemplate, Program), EmulatorError> {
    if template.document_type.len() != 3 {
        return Err(invalid("document_type must be [module, entity, type]"));
    }
    let mut names = Vec::new();
    name_steps(&mut template.steps, &mut names)?;
    check_steps(&template.steps, &names)?;
    let mut program = Program::default();
    program.emit(&template.steps)?;
    Ok((template, program))
}

fn invalid(message: impl Into<String>) -> EmulatorError {
    EmulatorError::InvalidSpec(message.into())
}

fn name_steps(steps: &mut [Step], names: &mut Vec<String>) -> Result<(), EmulatorError> {
    for step in steps {
        let name = match step {
            Step::Activity(a) => &mut a.name,
            Step::Task(t) => &mut t.name,
            Step::IfElse(b) => {
                name_steps(&mut b.then, names)?;
                name_steps(&mut b.otherwise, names)?;
                continue;
            }
            Step::SetField(_) | Step::Log(_) => continue,
        };
        if name.is_empty() {
            *name = ids::activity_name();
        }
        if !expr::is_identifier(name) || name == expr::DOCUMENT {
            return Err(invalid(format!(
                "step name `{name}` must be letters, digits and `_`, and not `Document`"
            )));
        }
        if names.contains(name) {
            return Err(invalid(format!("two steps are named `{name}`")));
        }
        names.push(name.clone());
    }
    Ok(())
}

fn check_steps(steps: &[Step], names: &[String]) -> Result<(), EmulatorError> {
    let known = |text: &str| -> Result<(), EmulatorError> {
        for e in expr::parse_all(text)? {
            if e.source != expr::DOCUMENT && !names.contains(&e.source) {
                return Err(invalid(format!("`{text}` refers to no step named `{}`", e.source)));
            }
        }
        Ok(())
    };
    for step in steps {
        match step {
            Step::Activity(a) => {
                if a.code.is_empty() {
                    return Err(invalid(format!("activity step `{}` has no code", a.name)));
                }
                for value in a.properties.values() {
                    expr::each_string(value, &mut |s| known(s))?;
                }
            }
            Step::IfElse(b) => {
                Expression::single(&b.condition.operand)?;
                known(&b.condition.operand)?;
                check_steps(&b.then, names)?;
                check_steps(&b.otherwise, names)?;
            }
            Step::Task(t) => {
                known(&t.title)?;
                known(&t.description)?;
            }
            Step::SetField(s) => {
                if s.field.is_empty() {
                    return Err(invalid("set_field step has no field"));
                }
                expr::each_string(&s.value, &mut |text| known(text))?;
            }
            Step::Log(l) => known(&l.message)?,
        }
    }
    Ok(())
}
