//! What list methods share: `SELECT`, `FILTER` (with the operator prefixes `=`, `!`, `!=`, `<`,
//! `<=`, `>`, `>=` or none), `ORDER`, and pages of 50 from `start`, answered with `total` and,
//! while rows remain, `next`; `start=-1` answers the first page uncounted (§5.2, §5.9).

use std::cmp::Ordering;

use crate::param::{Array, Param, upper_keys};
use crate::rest::{RestError, Success};

/// `IRestService::LIST_LIMIT`.
pub(crate) const PAGE: usize = 50;

/// The filter prefixes every list method accepts.
pub(crate) const OPERATIONS: &[&str] = &["", "=", "!", "!=", "<", "<=", ">", ">="];

/// How one list method lists: the fields its rows answer without a `SELECT` (none = every
/// field), its order without an `ORDER` (`true` = descending), and the filter prefixes it takes
/// ([`OPERATIONS`], and for CRM lists also `%` (contains) and `@` (one of)).
pub(crate) struct Listing<'a> {
    pub(crate) select: &'a [&'a str],
    pub(crate) order: (&'a str, bool),
    pub(crate) operations: &'a [&'a str],
}

impl Listing<'_> {
    /// Filters, sorts, pages and selects `rows` (upper-case keys, every field) by `params`
    /// (upper-case keys).
    pub(crate) fn page(&self, mut rows: Vec<Array>, params: &Array) -> Result<Success, RestError> {
        let filter = filter(params, self.operations)?;
        rows.retain(|row| filter.iter().all(|f| f.holds(row)));
        let order = order(params)?;
        let order =
            if order.is_empty() { vec![(self.order.0.to_owned(), self.order.1)] } else { order };
        rows.sort_by(|a, b| {
            order
                .iter()
                .map(|(field, desc)| {
                    let o = compare(a.get(field.as_str()), b.get(field.as_str()));
                    if *desc { o.reverse() } else { o }
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
        let known = |field: &str| field == "*" || rows.iter().any(|row| row.contains_key(field));
        let mut select: Vec<String> = match params.get("SELECT") {
            Some(Param::Array(fields)) => fields
                .values()
                .filter_map(Param::php_string)
                .map(|f| f.to_uppercase())
                .filter(|f| known(f))
                .collect(),
            _ => Vec::new(),
        };
        if select.is_empty() {
            select = self.select.iter().map(|f| (*f).to_owned()).collect();
        }
        let every = select.is_empty() || select.iter().any(|f| f == "*");
        let total = rows.len();
        let start = params.get("START").map_or(0, Param::php_int);
        // `start=-1` switches the count off: the first page, `total` 0 and no `next`; a client
        // pages on by filtering `>ID` the last ID it saw (§5.2, [D:huge-data]).
        let uncounted = start == -1;
        let start = start.max(0) as usize;
        let page: Vec<Param> = rows
            .into_iter()
            .skip(start)
            .take(PAGE)
            .map(|row| {
                if every {
                    return Param::Array(row);
                }
                Param::map(
                    select
                        .iter()
                        .map(|f| (f.clone(), row.get(f.as_str()).cloned().unwrap_or(Param::Null))),
                )
            })
            .collect();
        let end = start.saturating_add(page.len());
        Ok(Success {
            result: Param::list(page),
            total: Some(if uncounted { 0 } else { total as u64 }),
            next: (!uncounted && end < total).then_some(end as u64),
        })
    }
}

/// One `FILTER` entry.
struct Condition {
    field: String,
    op: String,
    value: Param,
}

impl Condition {
    fn holds(&self, row: &Array) -> bool {
        // A field the rows do not have filters nothing.
        let Some(actual) = row.get(&self.field) else {
            return true;
        };
        let equal = || match &self.value {
            Param::Array(options) if !matches!(actual, Param::Array(_)) => {
                options.values().any(|v| compare(Some(actual), Some(v)).is_eq())
            }
            v => compare(Some(actual), Some(v)).is_eq(),
        };
        match self.op.as_str() {
            "!" | "!=" => !equal(),
            "%" => {
                let needle = self.value.php_string().unwrap_or_default().to_lowercase();
                actual.php_string().unwrap_or_default().to_lowercase().contains(&needle)
            }
            "<" => compare(Some(actual), Some(&self.value)).is_lt(),
            "<=" => compare(Some(actual), Some(&self.value)).is_le(),
            ">" => compare(Some(actual), Some(&self.value)).is_gt(),
            ">=" => compare(Some(actual), Some(&self.value)).is_ge(),
            _ => equal(),
        }
    }
}

fn filter(params: &Array, operations: &[&str]) -> Result<Vec<Condition>, RestError> {
    let Some(filter) = params.get("FILTER") else {
        return Ok(Vec::new());
    };
    let Param::Array(filter) = filter else {
        return Err(RestError::bad_request("ERROR_ARGUMENT", "The filter is not an array."));
    };
    upper_keys(filter)
        .into_iter()
        .map(|(key, value)| {
            let split = key.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(key.len());
            let (op, field) = key.split_at(split);
            if !operations.contains(&op) {
                return Err(RestError::bad_request(
                    "ERROR_ARGUMENT",
                    format!("Filter operation not allowed: {op}"),
                ));
            }
            Ok(Condition { field: field.to_owned(), op: op.to_owned(), value })
        })
        .collect()
}

fn order(params: &Array) -> Result<Vec<(String, bool)>, RestError> {
    let Some(order) = params.get("ORDER") else {
        return Ok(Vec::new());
    };
    let Param::Array(order) = order else {
        return Err(RestError::bad_request("ERROR_ARGUMENT", "The order is not an array."));
    };
    upper_keys(order)
        .into_iter()
        .map(|(field, direction)| {
            match direction.php_string().unwrap_or_default().to_uppercase().as_str() {
                "ASC" => Ok((field, false)),
                "DESC" => Ok((field, true)),
                _ => Err(RestError::bad_request(
                    "ERROR_ARGUMENT",
                    "Order direction should be one of {ASC|DESC}",
                )),
            }
        })
        .collect()
}

/// Numbers (and numeric strings) by value, other scalars as strings, arrays by equality only.
fn compare(a: Option<&Param>, b: Option<&Param>) -> Ordering {
    let (a, b) = (a.unwrap_or(&Param::Null), b.unwrap_or(&Param::Null));
    if let (Param::Array(_), _) | (_, Param::Array(_)) = (a, b) {
        return if a == b { Ordering::Equal } else { Ordering::Less };
    }
    let (a, b) = (a.php_string().unwrap_or_default(), b.php_string().unwrap_or_default());
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.cmp(&b),
    }
}
