//! `batch`: many method calls in one request (protocol doc §5.5), at most 50 per request.
//!
//! Each command travels as `"method?query"`, the query written by PHP's `http_build_query`
//! (the portal reads it with `parse_url` + `parse_str`); the batch itself is a JSON body. Longer
//! lists are split into several `batch` calls, sent one after another in order. Per-command
//! results and errors come back in `result` / `result_error` (+ `result_total`, `result_next`,
//! `result_time`), any of which may be PHP's `[]` when empty.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::Value;

use super::client::{DomainMove, RestClient};
use super::envelope::{self, Response};
use super::error::{ApiError, Error};

/// The portal's limit of commands per `batch` request (`CRestUtil::BATCH_MAX_LENGTH`,
/// docs/protocol.md §5.5): every command past it fails on its own with
/// `ERROR_BATCH_LENGTH_EXCEEDED`. [`RestClient::batch`] splits longer lists at it; a caller that
/// wants one request per round takes at most this many.
pub const MAX_BATCH_COMMANDS: usize = 50;

/// One command of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCommand {
    /// The command's key: names its result and lets later commands refer to it
    /// (`$result[key][...]`). Keys must be unique within one [`RestClient::batch`].
    pub key: String,
    /// The REST method, e.g. `bizproc.event.send`.
    pub method: String,
    /// The method's parameters (a JSON object), encoded as PHP's `http_build_query` does.
    /// Object keys are written in sorted order.
    pub params: Value,
}

impl BatchCommand {
    /// A command from any serializable params (a struct or a `serde_json::json!` object).
    pub fn new<P: Serialize + ?Sized>(
        key: impl Into<String>,
        method: impl Into<String>,
        params: &P,
    ) -> Result<BatchCommand, Error> {
        let method = method.into();
        let params = serde_json::to_value(params)
            .map_err(|source| Error::Encode { method: method.clone(), source })?;
        Ok(BatchCommand { key: key.into(), method, params })
    }

    /// `method?query` as the portal parses it. A `null` value is dropped, `true`/`false` become
    /// `1`/`0`, an empty array disappears (PHP's rules, via `phpform`).
    pub fn to_command_string(&self) -> String {
        let query = match phpform::Value::from_json(&self.params) {
            Some(phpform::Value::Array(form)) => phpform::encode(&form),
            _ => String::new(),
        };
        if query.is_empty() { self.method.clone() } else { format!("{}?{}", self.method, query) }
    }
}

/// What became of one command.
#[derive(Debug)]
pub enum BatchOutcome {
    /// It ran and succeeded: its `result`, `result_total`, `result_next`, `result_time`.
    Ok(Response<Value>),
    /// It ran and failed with this error (an [`Error::Api`] without an HTTP status).
    Failed(Error),
    /// It did not run: an earlier command failed and `halt` was set.
    Skipped,
    /// Its `batch` request failed as a whole after earlier requests of the same
    /// [`RestClient::batch`] had gone through. Whether it ran is unknown for a transport error;
    /// the error's class tells whether to retry.
    Unsent(Arc<Error>),
}

impl BatchOutcome {
    /// The result, if the command succeeded.
    pub fn result(&self) -> Option<&Value> {
        match self {
            BatchOutcome::Ok(response) => Some(&response.result),
            _ => None,
        }
    }

    /// The error, if the command failed or was not sent.
    pub fn error(&self) -> Option<&Error> {
        match self {
            BatchOutcome::Failed(error) => Some(error),
            BatchOutcome::Unsent(error) => Some(error),
            _ => None,
        }
    }
}

/// One command and its outcome.
#[derive(Debug)]
pub struct BatchEntry {
    pub key: String,
    pub method: String,
    pub outcome: BatchOutcome,
}

/// The outcomes of a whole batch, in the order the commands were given.
#[derive(Debug)]
pub struct BatchResults {
    pub entries: Vec<BatchEntry>,
    /// How many `batch` requests were sent.
    pub requests: usize,
    /// Set when a request found the portal renamed and was re-sent to its new address (§5.1).
    pub moved: Option<DomainMove>,
}

impl BatchResults {
    /// The outcome of the command with this key.
    pub fn get(&self, key: &str) -> Option<&BatchOutcome> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.outcome)
    }

    /// Whether every command succeeded.
    pub fn all_ok(&self) -> bool {
        self.entries.iter().all(|e| matches!(e.outcome, BatchOutcome::Ok(_)))
    }
}

impl RestClient {
    /// Runs `commands` through `batch`, 50 per request, in order. With `halt`, the portal stops
    /// at the first failing command and no further request is sent; the rest are
    /// [`BatchOutcome::Skipped`].
    ///
    /// Returns `Err` when the first request fails as a whole (nothing is known to have run; the
    /// error is classified like any call's). If a later request fails, its commands and the
    /// ones after are [`BatchOutcome::Unsent`] and the earlier outcomes are kept.
    pub async fn batch(
        &self,
        commands: &[BatchCommand],
        halt: bool,
    ) -> Result<BatchResults, Error> {
        let mut seen = HashSet::new();
        if let Some(dup) = commands.iter().find(|c| !seen.insert(c.key.as_str())) {
            return Err(Error::DuplicateBatchKey { key: dup.key.clone() });
        }

        let mut entries = Vec::with_capacity(commands.len());
        let mut requests = 0;
        let mut moved = None;
        let mut stop: Option<BatchStop> = None;
        for chunk in commands.chunks(MAX_BATCH_COMMANDS) {
            if let Some(stop) = &stop {
                entries.extend(chunk.iter().map(|c| entry(c, stop.outcome())));
                continue;
            }
            let cmd: Vec<(&str, String)> =
                chunk.iter().map(|c| (c.key.as_str(), c.to_command_string())).collect();
            let body = BatchBody { halt: u8::from(halt), cmd: OrderedCmd(&cmd) };
            requests += 1;
            let response = match self.call("batch", &body).await {
                Ok(response) => response,
                Err(error) if requests == 1 => return Err(error),
                Err(error) => {
                    let error = Arc::new(error);
                    entries.extend(
                        chunk.iter().map(|c| entry(c, BatchOutcome::Unsent(error.clone()))),
                    );
                    stop = Some(BatchStop::Failed(error));
                    continue;
                }
            };
            moved = response.moved.or(moved);
            let mut parsed = ChunkResult::from_result(response.result);
            let mut failed = false;
            for command in chunk {
                let outcome = parsed.take(command);
                failed |= matches!(outcome, BatchOutcome::Failed(_));
                entries.push(BatchEntry {
                    key: command.key.clone(),
                    method: command.method.clone(),
                    outcome,
                });
            }
            if halt && failed {
                stop = Some(BatchStop::Halted);
            }
        }
        Ok(BatchResults { entries, requests, moved })
    }
}

/// Why later chunks are not sent.
enum BatchStop {
    Halted,
    Failed(Arc<Error>),
}

impl BatchStop {
    fn outcome(&self) -> BatchOutcome {
        match self {
            BatchStop::Halted => BatchOutcome::Skipped,
            BatchStop::Failed(error) => BatchOutcome::Unsent(error.clone()),
        }
    }
}

fn entry(command: &BatchCommand, outcome: BatchOutcome) -> BatchEntry {
    BatchEntry { key: command.key.clone(), method: command.method.clone(), outcome }
}

#[derive(Serialize)]
struct BatchBody<'a> {
    halt: u8,
    cmd: OrderedCmd<'a>,
}

/// `cmd` as a JSON object in the caller's order: the portal runs commands in object order, and
/// later commands may refer to earlier results.
struct OrderedCmd<'a>(&'a [(&'a str, String)]);

impl Serialize for OrderedCmd<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, command) in self.0 {
            map.serialize_entry(key, command)?;
        }
        map.end()
    }
}

/// The inner `result` of one `batch` answer, with each map read PHP-leniently.
#[derive(Default)]
struct ChunkResult {
    result: BTreeMap<String, Value>,
    errors: BTreeMap<String, Value>,
    totals: BTreeMap<String, Value>,
    nexts: BTreeMap<String, Value>,
    times: BTreeMap<String, Value>,
}

impl ChunkResult {
    fn from_result(mut value: Value) -> ChunkResult {
        let mut field = |name: &str| -> BTreeMap<String, Value> {
            let raw = value.get_mut(name).map(Value::take).unwrap_or(Value::Null);
            envelope::php_map(raw).unwrap_or_default()
        };
        ChunkResult {
            result: field("result"),
            errors: field("result_error"),
            totals: field("result_total"),
            nexts: field("result_next"),
            times: field("result_time"),
        }
    }

    /// The outcome of `command`: an error if `result_error` has its key, a result if `result`
    /// has it, otherwise it did not run (halted).
    fn take(&mut self, command: &BatchCommand) -> BatchOutcome {
        let key = command.key.as_str();
        if let Some(raw) = self.errors.remove(key) {
            let error = match raw.as_object().and_then(ApiError::from_object) {
                Some(error) => error,
                None => ApiError {
                    code: "ERROR_UNEXPECTED_ANSWER".into(),
                    description: raw.to_string(),
                    extra: serde_json::Map::new(),
                },
            };
            return BatchOutcome::Failed(Error::Api {
                method: command.method.clone(),
                status: None,
                error,
            });
        }
        match self.result.remove(key) {
            Some(result) => BatchOutcome::Ok(Response {
                result,
                total: self.totals.get(key).and_then(envelope::as_u64),
                next: self.nexts.get(key).and_then(envelope::as_u64),
                time: self.times.remove(key).and_then(envelope::time),
                moved: None,
            }),
            None => BatchOutcome::Skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn command_string_is_php_encoded_in_the_order_given() {
        let command = BatchCommand::new(
            "k",
            "bizproc.event.send",
            &json!({"EVENT_TOKEN": "a|b.c", "RETURN_VALUES": {"ok": "Y", "sum": 1.5},
                    "LOG_MESSAGE": "fünf & sechs"}),
        )
        .unwrap();
        assert_eq!(
            command.to_command_string(),
            "bizproc.event.send?EVENT_TOKEN=a%7Cb.c&RETURN_VALUES%5Bok%5D=Y\
             &RETURN_VALUES%5Bsum%5D=1.5&LOG_MESSAGE=f%C3%BCnf+%26+sechs"
        );
        let bare = BatchCommand::new("k", "app.info", &json!({})).unwrap();
        assert_eq!(bare.to_command_string(), "app.info");
    }

    #[test]
    fn cmd_keeps_the_callers_order() {
        let cmd = vec![("z", "a".to_owned()), ("a", "b".to_owned())];
        let body = BatchBody { halt: 1, cmd: OrderedCmd(&cmd) };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"halt":1,"cmd":{"z":"a","a":"b"}}"#);
    }

    #[test]
    fn chunk_result_reads_php_empty_arrays_and_per_command_parts() {
        let mut chunk = ChunkResult::from_result(json!({
            "result": {"a": true, "c": ["x"]},
            "result_error": [],
            "result_total": {"c": 120},
            "result_next": {"c": 50},
            "result_time": {"a": {"start": 1.0, "duration": 0.1}},
        }));
        let cmd = |k: &str| BatchCommand { key: k.into(), method: "m".into(), params: json!({}) };
        let a = chunk.take(&cmd("a"));
        assert_eq!(a.result(), Some(&json!(true)));
        let BatchOutcome::Ok(c) = chunk.take(&cmd("c")) else { panic!("c should succeed") };
        assert_eq!((c.total, c.next), (Some(120), Some(50)));
        assert!(matches!(chunk.take(&cmd("b")), BatchOutcome::Skipped));
    }

    #[test]
    fn chunk_result_reads_per_command_errors() {
        let mut chunk = ChunkResult::from_result(json!({
            "result": [],
            "result_error": {"x": {"error": "404", "error_description": "The business process is not found."}},
            "result_total": [], "result_next": [], "result_time": [],
        }));
        let cmd = BatchCommand {
            key: "x".into(),
            method: "bizproc.event.send".into(),
            params: json!({}),
        };
        let outcome = chunk.take(&cmd);
        let error = outcome.error().expect("an error");
        assert_eq!(error.code(), Some("404"));
        assert_eq!(error.class(), crate::rest::ErrorClass::Permanent);
    }
}
