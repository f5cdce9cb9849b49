//! `batch`: up to 50 `method?query` commands in one request, each run as its own call with the
//! outer credential, with `$result[...]` references and PHP `(bool)` `halt` (protocol doc §5.5).

use std::sync::Arc;
use std::time::SystemTime;

use crate::param::{Array, Param, get_ci};
use crate::rest::methods;
use crate::rest::{Credential, RestError, Success, parse_str, time_object};
use crate::state::{Shared, State};

/// `CRestUtil::BATCH_MAX_LENGTH`.
pub(crate) const MAX_COMMANDS: usize = 50;

/// Runs a batch. Always succeeds as a whole: failures go to `result_error` (§5.5).
pub(crate) fn run(
    shared: &Arc<Shared>,
    state: &mut State,
    portal: usize,
    params: &Array,
    credential: &Credential,
) -> Result<Success, RestError> {
    let halt = get_ci(params, "halt").is_some_and(Param::truthy);
    let mut results = Array::new();
    let mut errors = Array::new();
    let mut totals = Array::new();
    let mut nexts = Array::new();
    let mut times = Array::new();
    let commands = get_ci(params, "cmd").and_then(Param::as_array).cloned().unwrap_or_default();
    for (index, (key, command)) in commands.iter().enumerate() {
        if index >= MAX_COMMANDS {
            let e =
                RestError::bad_request("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded");
            errors.insert(key.clone(), error_entry(&e));
            if halt {
                break;
            }
            continue;
        }
        let text = command.php_string().unwrap_or_default();
        let (path, query) = text.split_once('?').unwrap_or((&text, ""));
        let method = path.trim_start_matches('/');
        let method = method.strip_suffix(".json").unwrap_or(method).to_lowercase();
        let start = SystemTime::now();
        let mut sub = parse_str(query.as_bytes());
        // The outer credential replaces whatever the command carried (§5.5).
        sub.shift_remove("auth");
        sub.shift_remove("access_token");
        let sub = substitute_array(&sub, &results);
        let outcome = methods::call(shared, state, portal, &method, sub, credential, true);
        methods::record_outcome(state, portal, &method, &outcome, true);
        match &outcome.result {
            Ok(success) => {
                results.insert(key.clone(), success.result.clone());
                if let Some(total) = success.total {
                    totals.insert(key.clone(), Param::Num(total.into()));
                }
                if let Some(next) = success.next {
                    nexts.insert(key.clone(), Param::Num(next.into()));
                }
                times.insert(
                    key.clone(),
                    time_object(start, SystemTime::now(), outcome.processing, outcome.operating),
                );
            }
            Err(e) => {
                errors.insert(key.clone(), error_entry(e));
                if halt {
                    break;
                }
            }
        }
    }
    // Empty maps serialize as `[]`, as PHP's json_encode does (§5.2).
    Ok(Success::from(Param::map([
        ("result", Param::Array(results)),
        ("result_error", Param::Array(errors)),
        ("result_total", Param::Array(totals)),
        ("result_next", Param::Array(nexts)),
        ("result_time", Param::Array(times)),
    ])))
}

fn error_entry(e: &RestError) -> Param {
    Param::map([("error", Param::str(&e.code)), ("error_description", Param::str(&e.description))])
}

fn substitute_array(params: &Array, results: &Array) -> Array {
    params.iter().map(|(k, v)| (k.clone(), substitute(v, results))).collect()
}

/// Replaces `$result[key][field]…` references: a value that is exactly one reference becomes the
/// referenced structure; references inside a longer string are replaced only by scalars.
fn substitute(value: &Param, results: &Array) -> Param {
    match value {
        Param::Array(a) => Param::Array(substitute_array(a, results)),
        Param::Str(s) if s.contains("$result[") => {
            if let Some((path, end)) = parse_reference(s, 0)
                && end == s.len()
            {
                return resolve(results, &path).cloned().unwrap_or_else(|| value.clone());
            }
            let mut out = String::new();
            let mut i = 0;
            while let Some(found) = s[i..].find("$result[") {
                let at = i + found;
                out.push_str(&s[i..at]);
                match parse_reference(s, at) {
                    Some((path, end)) => {
                        match resolve(results, &path) {
                            Some(p @ (Param::Str(_) | Param::Num(_))) => {
                                out.push_str(&p.php_string().unwrap_or_default());
                            }
                            _ => out.push_str(&s[at..end]),
                        }
                        i = end;
                    }
                    None => {
                        out.push_str("$result[");
                        i = at + "$result[".len();
                    }
                }
            }
            out.push_str(&s[i..]);
            Param::Str(out)
        }
        other => other.clone(),
    }
}

/// Parses `$result[a][b]…` starting at `at`; returns the path and the end offset.
fn parse_reference(s: &str, at: usize) -> Option<(Vec<String>, usize)> {
    let mut i = at + "$result".len();
    let mut path = Vec::new();
    while s[i..].starts_with('[') {
        let close = s[i..].find(']')? + i;
        path.push(s[i + 1..close].to_owned());
        i = close + 1;
    }
    (!path.is_empty()).then_some((path, i))
}

fn resolve<'a>(results: &'a Array, path: &[String]) -> Option<&'a Param> {
    let (first, rest) = path.split_first()?;
    let mut current = results.get(first)?;
    for key in rest {
        current = current.as_array()?.get(key)?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_whole_and_inside_strings() {
        let results: Array = [("a".to_owned(), Param::list([Param::str("x"), Param::str("y")]))]
            .into_iter()
            .collect();
        assert_eq!(
            substitute(&Param::str("$result[a]"), &results),
            Param::list([Param::str("x"), Param::str("y")])
        );
        assert_eq!(substitute(&Param::str("id=$result[a][1]!"), &results), Param::str("id=y!"));
        assert_eq!(substitute(&Param::str("$result[zz]"), &results), Param::str("$result[zz]"));
    }
}
