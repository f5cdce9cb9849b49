//! The Connector trait and what goes in and out of it: the request, the outputs, the error class.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

/// The future a connector returns. Boxed so that `dyn Connector` works.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Any error a connector keeps as the cause of a [`ConnectorError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One integration the host runs an action through.
///
/// The host calls [`run`](Connector::run) once per attempt, inside its own per-attempt timeout,
/// and may drop the future at any await point (connectors must be cancel-safe; dropping an
/// in-flight HTTP request is). Execution is at least once: the same job can run again after a
/// crash, so a connector with side effects passes [`ConnectorRequest::job_id`] on as an
/// idempotency key. Nothing here may panic on bad input: return [`ConnectorError::Fatal`].
///
/// A connector knows nothing of the host's HTTP server, its store or Bitrix24.
pub trait Connector: Send + Sync {
    /// Runs one attempt.
    fn run<'a>(
        &'a self,
        request: &'a ConnectorRequest,
    ) -> BoxFuture<'a, Result<Outputs, ConnectorError>>;

    /// The properties this connector reads and writes, if it can tell, so the host can check
    /// them against the action's declared properties at start instead of failing every job.
    fn contract(&self) -> Option<Contract> {
        None
    }
}

/// What a connector needs from an action's properties; see [`Connector::contract`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contract {
    /// Input property ids that must be present in every call (a missing one is a fatal error).
    pub inputs: BTreeSet<String>,
    /// Return property ids the connector may produce.
    pub outputs: BTreeSet<String>,
}

/// The document a workflow runs on: Bitrix24's `[module, entity, id]`, e.g.
/// `["crm", "CCrmDocumentDeal", "DEAL_42"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentId {
    pub module: String,
    pub entity: String,
    pub id: String,
}

impl DocumentId {
    pub fn new(
        module: impl Into<String>,
        entity: impl Into<String>,
        id: impl Into<String>,
    ) -> DocumentId {
        DocumentId { module: module.into(), entity: entity.into(), id: id.into() }
    }
}

/// One attempt at one job, as the host hands it to a connector.
#[derive(Debug, Clone)]
pub struct ConnectorRequest {
    /// The job's id: stable across attempts and re-runs, so it is the idempotency key.
    pub job_id: String,
    /// The action's code, e.g. `check_credit_limit`.
    pub action_code: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Input properties by id, already converted by the host to the declared types: `int` and
    /// `double` are numbers, `bool` is `true`/`false`, a multiple property is an array, and an
    /// empty optional property may be absent altogether (Bitrix24 drops empty values).
    pub properties: Map<String, Value>,
    /// The document the workflow runs on.
    pub document: DocumentId,
    /// When the job gives up and takes its failure policy (for information: the host enforces it).
    pub deadline: SystemTime,
    /// The host's per-attempt timeout, if it has one. A connector bounds its own waits by it so
    /// that it can report what timed out; the host enforces it anyway.
    pub attempt_timeout: Option<Duration>,
}

impl ConnectorRequest {
    /// A first attempt with no properties, a 30-minute deadline and no per-attempt timeout.
    pub fn new(
        job_id: impl Into<String>,
        action_code: impl Into<String>,
        document: DocumentId,
    ) -> ConnectorRequest {
        ConnectorRequest {
            job_id: job_id.into(),
            action_code: action_code.into(),
            attempt: 1,
            properties: Map::new(),
            document,
            deadline: SystemTime::now() + Duration::from_secs(30 * 60),
            attempt_timeout: None,
        }
    }

    /// Sets one input property.
    pub fn with_property(mut self, id: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(id.into(), value.into());
        self
    }
}

/// A successful attempt: return values by return-property id, and a line for the workflow's log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs {
    /// Values by return-property id, as JSON; the host converts them to the declared types.
    pub values: Map<String, Value>,
    /// An optional line for the workflow's log.
    pub log: Option<String>,
}

impl Outputs {
    pub fn new() -> Outputs {
        Outputs::default()
    }

    /// Sets one return value.
    pub fn with(mut self, id: impl Into<String>, value: impl Into<Value>) -> Self {
        self.values.insert(id.into(), value.into());
        self
    }

    /// Sets the log line.
    pub fn with_log(mut self, log: impl Into<String>) -> Self {
        self.log = Some(log.into());
        self
    }
}

/// A failed attempt, classified once by the connector that saw it.
///
/// `reason` is complete on its own and free of secrets: the host writes it to the workflow's log
/// and the job's history. `source` keeps the connector's own typed error (for example
/// [`HttpError`](crate::http::HttpError)) for programs that downcast it; its text is already in
/// `reason`, so do not print the chain after it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Worth another attempt (after `retry_after`, if the other side said so) until the deadline.
    #[error("{reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
        #[source]
        source: Option<BoxError>,
    },
    /// Another attempt would fail the same way: the host applies the failure policy now.
    #[error("{reason}")]
    Fatal {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl ConnectorError {
    pub fn retryable(reason: impl Into<String>) -> ConnectorError {
        ConnectorError::Retryable { reason: reason.into(), retry_after: None, source: None }
    }

    pub fn fatal(reason: impl Into<String>) -> ConnectorError {
        ConnectorError::Fatal { reason: reason.into(), source: None }
    }

    /// Asks for the next attempt no sooner than `after` (ignored on a fatal error).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        if let ConnectorError::Retryable { retry_after, .. } = &mut self {
            *retry_after = Some(after);
        }
        self
    }

    /// Keeps the typed cause.
    pub fn with_source(mut self, cause: impl Into<BoxError>) -> Self {
        match &mut self {
            ConnectorError::Retryable { source, .. } | ConnectorError::Fatal { source, .. } => {
                *source = Some(cause.into());
            }
        }
        self
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, ConnectorError::Retryable { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectorError::Retryable { retry_after, .. } => *retry_after,
            ConnectorError::Fatal { .. } => None,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            ConnectorError::Retryable { reason, .. } | ConnectorError::Fatal { reason, .. } => {
                reason
            }
        }
    }
}
