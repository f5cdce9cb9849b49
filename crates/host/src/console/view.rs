//! How the console's pages show things: times, lengths that keep a page bounded whatever a
//! portal sent, JSON, a localized label, and the timeline of a job drawn against its deadline.
//! The templates escape everything; this only shapes and bounds it.

use std::fmt::Write;

use b24::rest::LocalizedText;
use serde_json::Value;
use store::{AttemptKind, AttemptOutcome, Job, JobState};

use crate::clock;

/// The most characters of one value (a property, an error, an id) a page shows.
pub const MAX_VALUE_CHARS: usize = 300;

/// The most characters of a stored result or payload shown as JSON.
pub const MAX_JSON_CHARS: usize = 4_000;

/// `text` cut to `max` characters, with `…` when it was longer.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A value as a page shows it: a string as it is, anything else as JSON; clipped.
pub fn value(value: &Value) -> String {
    match value {
        Value::String(text) => clip(text, MAX_VALUE_CHARS),
        other => clip(&other.to_string(), MAX_VALUE_CHARS),
    }
}

/// `value` as indented JSON, clipped.
pub fn json(value: &Value) -> String {
    clip(&serde_json::to_string_pretty(value).unwrap_or_default(), MAX_JSON_CHARS)
}

/// A Unix-ms time as `2026-11-24 03:10:05Z`.
pub fn at(unix_ms: i64) -> String {
    clock::timestamp(unix_ms)
}

/// An optional time, `-` when there is none.
pub fn maybe_at(unix_ms: Option<i64>) -> String {
    unix_ms.map_or_else(|| "-".to_owned(), at)
}

/// A span of milliseconds in words: `3 s`, `4 min 10 s`, `2 h 5 min`, `3 d 4 h`.
pub fn span(ms: i64) -> String {
    let seconds = ms.unsigned_abs() / 1000;
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    let mut text = String::new();
    for (amount, unit) in [(d, "d"), (h, "h"), (m, "min"), (s, "s")] {
        if amount > 0 && text.split(' ').count() < 4 {
            let _ = write!(text, "{}{amount} {unit}", if text.is_empty() { "" } else { " " });
        }
    }
    if text.is_empty() { format!("{} ms", ms.unsigned_abs()) } else { text }
}

/// How a deadline stands at `now`: `in 4 min 10 s` or `passed 3 s ago`.
pub fn until(deadline: i64, now: i64) -> String {
    if deadline >= now {
        format!("in {}", span(deadline - now))
    } else {
        format!("passed {} ago", span(now - deadline))
    }
}

/// A label in English when it has one, else in its first language.
pub fn label(text: &LocalizedText) -> String {
    text.in_language("en").to_owned()
}

/// A job's document as the portal names it (`DEAL_42`), or `-`.
pub fn document(job: &Job) -> String {
    job.call.document_id.as_deref().map_or_else(|| "-".to_owned(), |id| clip(id, MAX_VALUE_CHARS))
}

/// The timeline's width and height in SVG units.
pub const TIMELINE_WIDTH: f64 = 800.0;
const TIMELINE_LEFT: f64 = 10.0;
const TIMELINE_RIGHT: f64 = 790.0;

/// A job's life drawn against its deadline: x positions in SVG units, each mark with its class
/// (the stylesheet colours them) and a title a browser shows on hover.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub marks: Vec<Mark>,
    pub bars: Vec<Bar>,
    /// The deadline's x, and whether it passed before the job was finished.
    pub deadline_x: f64,
    pub deadline_title: String,
    /// Now's x, while the job is not finished.
    pub now_x: Option<f64>,
    pub start_label: String,
    pub end_label: String,
}

/// A point in time: the call's arrival, the result's delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub x: f64,
    pub class: &'static str,
    pub title: String,
}

/// An attempt: from its start to its end (or now), on the row of its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub x: f64,
    pub width: f64,
    pub y: f64,
    pub class: &'static str,
    pub title: String,
}

impl Timeline {
    /// The timeline of `job` with `attempts`, at `now`: from its arrival to the later of its
    /// deadline, its last event and (while it is not finished) now.
    pub fn of(job: &Job, attempts: &[store::Attempt], now: i64) -> Timeline {
        let finished = matches!(job.state, JobState::Done | JobState::Dead);
        let start = job.created_at;
        let mut end = job.call.deadline_at.max(job.updated_at);
        end = end.max(job.delivered_at.unwrap_or(start));
        for attempt in attempts {
            end = end.max(attempt.finished_at.unwrap_or(attempt.started_at));
        }
        if !finished {
            end = end.max(now);
        }
        let length = (end - start).max(1) as f64;
        let x = |t: i64| {
            TIMELINE_LEFT
                + (t - start).clamp(0, end - start) as f64 / length
                    * (TIMELINE_RIGHT - TIMELINE_LEFT)
        };
        let mut marks =
            vec![Mark { x: x(start), class: "arrived", title: format!("arrived {}", at(start)) }];
        if let Some(delivered) = job.delivered_at {
            marks.push(Mark {
                x: x(delivered),
                class: "delivered",
                title: format!("delivered {}", at(delivered)),
            });
        }
        let bars = attempts
            .iter()
            .map(|attempt| {
                let until =
                    attempt.finished_at.unwrap_or(if finished { attempt.started_at } else { now });
                let (y, kind) = match attempt.kind {
                    AttemptKind::Execute => (22.0, "run"),
                    AttemptKind::Deliver => (42.0, "send"),
                };
                let outcome = attempt.outcome.map_or("under way", AttemptOutcome::as_str);
                Bar {
                    x: x(attempt.started_at),
                    width: (x(until) - x(attempt.started_at)).max(3.0),
                    y,
                    class: match attempt.outcome {
                        Some(AttemptOutcome::Ok) => "ok",
                        None => "open",
                        Some(_) => "failed",
                    },
                    title: format!(
                        "{kind} #{}: {outcome}, {}",
                        attempt.number,
                        at(attempt.started_at)
                    ),
                }
            })
            .collect();
        let deadline = job.call.deadline_at;
        Timeline {
            marks,
            bars,
            deadline_x: x(deadline),
            deadline_title: format!("deadline {}", at(deadline)),
            now_x: (!finished).then(|| x(now)),
            start_label: at(start),
            end_label: at(end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_clipped_at_a_character_boundary() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("жжжж", 2), "жж…");
        assert_eq!(value(&Value::String("x".repeat(400))).chars().count(), MAX_VALUE_CHARS + 1);
        assert_eq!(value(&serde_json::json!([1, 2])), "[1,2]");
    }

    fn job(state: JobState, created_at: i64, deadline_at: i64) -> Job {
        Job {
            id: store::JobId(7),
            call: store::NewJob {
                member_id: "p".into(),
                action_code: "check".into(),
                event_token: "t".into(),
                workflow_id: "w".into(),
                document_id: None,
                payload: Value::Null,
                payload_version: 1,
                waits_for_result: true,
                deadline_at,
            },
            state,
            attempts: 1,
            next_run_at: None,
            lease_owner: None,
            lease_until: None,
            result: None,
            result_kind: None,
            delivery_attempts: 0,
            next_delivery_at: None,
            delivered_at: None,
            send_uncertain: false,
            delivery_unconfirmed: false,
            dead_reason: None,
            created_at,
            updated_at: created_at,
        }
    }

    fn attempt(
        kind: AttemptKind,
        started_at: i64,
        finished_at: Option<i64>,
        outcome: Option<AttemptOutcome>,
    ) -> store::Attempt {
        store::Attempt {
            job_id: store::JobId(7),
            kind,
            number: 1,
            worker: "w".into(),
            started_at,
            finished_at,
            outcome,
            error: None,
        }
    }

    #[test]
    fn a_timeline_runs_from_arrival_to_the_later_of_deadline_and_now() {
        let waiting = job(JobState::RetryWait, 1_000, 11_000);
        let attempts =
            [attempt(AttemptKind::Execute, 1_000, Some(2_000), Some(AttemptOutcome::Retryable))];
        let line = Timeline::of(&waiting, &attempts, 6_000);
        assert_eq!(line.marks[0].x, TIMELINE_LEFT, "arrival at the left");
        assert_eq!(line.deadline_x, TIMELINE_RIGHT, "the deadline ends the line while it is ahead");
        assert_eq!(line.now_x, Some(TIMELINE_LEFT + (TIMELINE_RIGHT - TIMELINE_LEFT) / 2.0));
        assert_eq!(line.bars.len(), 1);
        assert_eq!(line.bars[0].class, "failed");
        assert!(
            (line.bars[0].width - 78.0).abs() < 1e-9,
            "a tenth of the line: {:?}",
            line.bars[0]
        );

        // Past its deadline, now ends the line; a delivered job has no "now" and a delivery mark.
        let late = Timeline::of(&waiting, &attempts, 21_000);
        assert_eq!(late.deadline_x, TIMELINE_LEFT + (TIMELINE_RIGHT - TIMELINE_LEFT) / 2.0);
        let mut done = job(JobState::Done, 1_000, 11_000);
        done.delivered_at = Some(3_000);
        let sent = [
            attempt(AttemptKind::Execute, 1_000, Some(2_000), Some(AttemptOutcome::Ok)),
            attempt(AttemptKind::Deliver, 2_500, None, None),
        ];
        let line = Timeline::of(&done, &sent, 50_000);
        assert_eq!(line.now_x, None);
        assert_eq!(line.deadline_x, TIMELINE_RIGHT);
        assert_eq!(
            line.marks.iter().map(|m| m.class).collect::<Vec<_>>(),
            ["arrived", "delivered"]
        );
        assert_eq!((line.bars[0].class, line.bars[1].class), ("ok", "open"));
        assert_eq!(line.bars[1].width, 3.0, "an open send of a finished job is a sliver");
    }

    #[test]
    fn spans_read_as_words() {
        assert_eq!(span(250), "250 ms");
        assert_eq!(span(3_000), "3 s");
        assert_eq!(span(250_000), "4 min 10 s");
        assert_eq!(span(7_500_000), "2 h 5 min");
        assert_eq!(until(10_000, 7_000), "in 3 s");
        assert_eq!(until(7_000, 10_000), "passed 3 s ago");
    }
}
