//! The emulator's own errors (set-up and control operations; REST errors are wire data instead).

use crate::designer::PropertyError;

/// Why an emulator operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot bind a listener on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("no portal with domain `{0}`")]
    UnknownPortal(String),
    #[error("no app with client_id `{0}`")]
    UnknownApp(String),
    #[error("an app with client_id `{0}` already exists")]
    DuplicateApp(String),
    #[error("app `{client_id}` is not installed on `{domain}`")]
    NotInstalled { domain: String, client_id: String },
    #[error("no activity or robot `{code}` is registered on `{domain}`")]
    UnknownCode { domain: String, code: String },
    #[error(
        "code `{code}` is registered by several apps on `{domain}`; set WorkflowSpec::client_id"
    )]
    AmbiguousCode { domain: String, code: String },
    #[error("no workflow `{workflow_id}` on `{domain}`")]
    UnknownWorkflow { domain: String, workflow_id: String },
    #[error("no document `{document_id}` on `{domain}`")]
    UnknownDocument { domain: String, document_id: String },
    #[error("no workflow template {template_id} on `{domain}`")]
    UnknownTemplate { domain: String, template_id: u64 },
    #[error("no task {task_id} on `{domain}`")]
    UnknownTask { domain: String, task_id: u64 },
    #[error("workflow template {template_id} on `{domain}` has no activity step `{step}`")]
    UnknownStep { domain: String, template_id: u64, step: String },
    /// The settings dialog's values do not validate; nothing was stored.
    #[error("the settings do not validate: {}", describe(.0))]
    InvalidProperties(Vec<PropertyError>),
    #[error("task {task_id} is not open: it is completed or its workflow has ended")]
    TaskClosed { task_id: u64 },
    #[error("invalid specification: {0}")]
    InvalidSpec(String),
    #[error("cannot set up TLS: {what}")]
    Tls {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl EmulatorError {
    /// The HTTP status an answer about this error has: 404 for an unknown thing, 500 for the
    /// emulator's own trouble, 400 for anything else.
    pub(crate) fn http_status(&self) -> u16 {
        match self {
            EmulatorError::UnknownPortal(_)
            | EmulatorError::UnknownApp(_)
            | EmulatorError::UnknownCode { .. }
            | EmulatorError::UnknownWorkflow { .. }
            | EmulatorError::UnknownDocument { .. }
            | EmulatorError::UnknownTemplate { .. }
            | EmulatorError::UnknownTask { .. }
            | EmulatorError::UnknownStep { .. } => 404,
            EmulatorError::Bind { .. } | EmulatorError::HttpClient(_) => 500,
            _ => 400,
        }
    }

    pub(crate) fn not_installed(domain: &str, client_id: &str) -> EmulatorError {
        EmulatorError::NotInstalled { domain: domain.to_owned(), client_id: client_id.to_owned() }
    }

    pub(crate) fn unknown_workflow(domain: &str, workflow_id: &str) -> EmulatorError {
        EmulatorError::UnknownWorkflow {
            domain: domain.to_owned(),
            workflow_id: workflow_id.to_owned(),
        }
    }
}

fn describe(errors: &[PropertyError]) -> String {
    let each = errors.iter().map(|e| format!("{} {}: {}", e.code, e.parameter, e.message));
    each.collect::<Vec<_>>().join("; ")
}

/// `e` and each of its sources, joined with ": " (reqwest's own text stops at "error sending
/// request", which hides whether the connection was refused, reset or timed out).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
