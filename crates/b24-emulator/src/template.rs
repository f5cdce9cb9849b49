//! Workflow templates as the BP designer builds them, in a small subset: a REST activity,
//! If-Then-Else, a task for a user, setting a document field, and a log line, with the
//! template's parameters, variables and constants. A template is validated when it is stored
//! and compiled into a flat program (branches become jumps) that [`crate::engine`] runs.
//!
//! Expressions (`{=Document:FIELD}`, `{=Template:Param}`, `{=Variable:X}`, `{=Constant:X}`,
//! `{=step:value}`) are described in [`crate::expr`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// What a workflow is started with (`PARAMETERS` of `bizproc.workflow.start`), by ID;
    /// `{=Template:ID}` reads them.
    pub parameters: IndexMap<String, TemplateField>,
    /// `{=Variable:ID}`; no step sets a variable, so each reads as its `Default`.
    pub variables: IndexMap<String, TemplateField>,
    /// `{=Constant:ID}`: each reads as its `Default`.
    pub constants: IndexMap<String, TemplateField>,
    pub steps: Vec<Step>,
}

impl Default for WorkflowTemplate {
    fn default() -> Self {
        Self {
            id: 0,
            name: String::new(),
            document_type: deal_type(),
            parameters: IndexMap::new(),
            variables: IndexMap::new(),
            constants: IndexMap::new(),
            steps: Vec::new(),
        }
    }
}

impl WorkflowTemplate {
    /// The activity steps, in the order the designer shows them (a branch's `then` before its
    /// `otherwise`).
    pub(crate) fn activity_steps(&self) -> Vec<&ActivityStep> {
        let mut out = Vec::new();
        each_step(&self.steps, &mut |step| {
            if let Step::Activity(a) = step {
                out.push(a);
            }
        });
        out
    }

    /// The activity step named `name`.
    pub(crate) fn activity_step_mut(&mut self, name: &str) -> Option<&mut ActivityStep> {
        find_activity_mut(&mut self.steps, name)
    }
}

/// A template parameter, variable or constant, in the designer's own shape (the keys of
/// `PARAMETERS`, `VARIABLES` and `CONSTANTS` in `bizproc.workflow.template.list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "PascalCase")]
pub struct TemplateField {
    pub name: String,
    /// A property type (§1.5): `string`, `int`, `user`, … (default `string`).
    #[serde(rename = "Type")]
    pub field_type: String,
    pub description: String,
    /// A required parameter must have a value (or a `Default`) when a workflow starts.
    pub required: bool,
    pub multiple: bool,
    /// For `select`: `{value: label}`.
    pub options: Value,
    pub default: Value,
}

impl Default for TemplateField {
    fn default() -> Self {
        Self {
            name: String::new(),
            field_type: "string".into(),
            description: String::new(),
            required: false,
            multiple: false,
            options: Value::Null,
            default: Value::Null,
        }
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

/// A template flattened into instructions; the program counter is an index into `ops`. It
/// keeps the template's declarations, which expressions read at run time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Program {
    pub(crate) ops: Vec<Op>,
    pub(crate) parameters: IndexMap<String, TemplateField>,
    pub(crate) variables: IndexMap<String, TemplateField>,
    pub(crate) constants: IndexMap<String, TemplateField>,
}

impl Program {
    /// A one-activity program (what [`crate::Emulator::start_workflow`] runs).
    pub(crate) fn single(step: ActivityStep) -> Program {
        Program { ops: vec![Op::Activity(step)], ..Program::default() }
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

    /// The parameters a workflow starts with: each declared one from `given` (by ID), or its
    /// `Default` when `given` has none or an empty one. Keys that are not declared are ignored.
    /// A required parameter left empty is refused with the loader's message
    /// (`BPCGWTL_INVALID8`, protocol §5.9), naming the parameter's `Name`.
    pub(crate) fn start_parameters(
        &self,
        given: &serde_json::Map<String, Value>,
    ) -> Result<serde_json::Map<String, Value>, String> {
        let mut values = serde_json::Map::new();
        for (id, field) in &self.parameters {
            let value = given.get(id).filter(|v| !expr::is_empty(v)).unwrap_or(&field.default);
            if field.required && expr::is_empty(value) {
                let name = if field.name.is_empty() { id } else { &field.name };
                return Err(format!("The '{name}' field is required."));
            }
            values.insert(id.clone(), value.clone());
        }
        Ok(values)
    }
}

/// Names activity and task steps that have none, checks names, codes, declarations and
/// expressions, and compiles the template. The returned template is what gets stored.
pub(crate) fn prepare(
    mut template: WorkflowTemplate,
) -> Result<(WorkflowTemplate, Program), EmulatorError> {
    if template.document_type.len() != 3 {
        return Err(invalid("document_type must be [module, entity, type]"));
    }
    let declared = [&template.parameters, &template.variables, &template.constants];
    if let Some(id) = declared.iter().flat_map(|d| d.keys()).find(|id| !expr::is_identifier(id)) {
        return Err(invalid(format!(
            "parameter, variable or constant `{id}` must be letters, digits and `_`"
        )));
    }
    let mut names = Vec::new();
    name_steps(&mut template.steps, &mut names)?;
    check_steps(&template.steps, &Known::new(&template))?;
    let mut program = Program {
        ops: Vec::new(),
        parameters: template.parameters.clone(),
        variables: template.variables.clone(),
        constants: template.constants.clone(),
    };
    program.emit(&template.steps)?;
    Ok((template, program))
}

fn invalid(message: impl Into<String>) -> EmulatorError {
    EmulatorError::InvalidSpec(message.into())
}

/// Calls `f` on every step, a branch before its `then` steps and those before its `otherwise`
/// steps.
fn each_step<'s>(steps: &'s [Step], f: &mut dyn FnMut(&'s Step)) {
    for step in steps {
        f(step);
        if let Step::IfElse(b) = step {
            each_step(&b.then, f);
            each_step(&b.otherwise, f);
        }
    }
}

fn find_activity_mut<'s>(steps: &'s mut [Step], name: &str) -> Option<&'s mut ActivityStep> {
    for step in steps {
        let found = match step {
            Step::Activity(a) if a.name == name => Some(a),
            Step::IfElse(b) => find_activity_mut(&mut b.then, name)
                .or_else(|| find_activity_mut(&mut b.otherwise, name)),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
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
        if !expr::is_identifier(name) || expr::SOURCES.contains(&name.as_str()) {
            return Err(invalid(format!(
                "step name `{name}` must be letters, digits and `_`, and not one of {}",
                expr::SOURCES.join(", ")
            )));
        }
        if names.contains(name) {
            return Err(invalid(format!("two steps are named `{name}`")));
        }
        names.push(name.clone());
    }
    Ok(())
}

/// What the expressions of a template may name: the document, its parameters, variables and
/// constants, and its (named) activity and task steps.
pub(crate) struct Known<'t> {
    template: &'t WorkflowTemplate,
    steps: Vec<&'t str>,
}

impl<'t> Known<'t> {
    pub(crate) fn new(template: &'t WorkflowTemplate) -> Known<'t> {
        let mut steps = Vec::new();
        each_step(&template.steps, &mut |step| match step {
            Step::Activity(a) => steps.push(a.name.as_str()),
            Step::Task(t) => steps.push(t.name.as_str()),
            Step::IfElse(_) | Step::SetField(_) | Step::Log(_) => {}
        });
        Known { template, steps }
    }

    /// Checks that every expression in `text` is well-formed and names something declared.
    pub(crate) fn check(&self, text: &str) -> Result<(), EmulatorError> {
        for e in expr::parse_all(text)? {
            let (declared, kind) = match e.source.as_str() {
                expr::DOCUMENT => continue,
                expr::TEMPLATE => (self.template.parameters.contains_key(&e.name), "parameter"),
                expr::VARIABLE => (self.template.variables.contains_key(&e.name), "variable"),
                expr::CONSTANT => (self.template.constants.contains_key(&e.name), "constant"),
                step => {
                    if self.steps.contains(&step) {
                        continue;
                    }
                    return Err(invalid(format!("`{text}` refers to no step named `{step}`")));
                }
            };
            if !declared {
                return Err(invalid(format!(
                    "`{text}` refers to no {kind} named `{}`: declare it in the template's \
                     {kind}s",
                    e.name
                )));
            }
        }
        Ok(())
    }
}

fn check_steps(steps: &[Step], known: &Known<'_>) -> Result<(), EmulatorError> {
    for step in steps {
        match step {
            Step::Activity(a) => {
                if a.code.is_empty() {
                    return Err(invalid(format!("activity step `{}` has no code", a.name)));
                }
                for value in a.properties.values() {
                    expr::each_string(value, &mut |s| known.check(s))?;
                }
            }
            Step::IfElse(b) => {
                Expression::single(&b.condition.operand)?;
                known.check(&b.condition.operand)?;
                check_steps(&b.then, known)?;
                check_steps(&b.otherwise, known)?;
            }
            Step::Task(t) => {
                known.check(&t.title)?;
                known.check(&t.description)?;
            }
            Step::SetField(s) => {
                if s.field.is_empty() {
                    return Err(invalid("set_field step has no field"));
                }
                expr::each_string(&s.value, &mut |text| known.check(text))?;
            }
            Step::Log(l) => known.check(&l.message)?,
        }
    }
    Ok(())
}
