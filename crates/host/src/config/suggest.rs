//! "Did you mean …?": the known name closest to a misspelt one, for the messages of
//! `check-config` and of a refused start — configuration keys, property ids, environment
//! variables.

/// The one of `known` closest to `wrong`, when it is close enough to be a likely misspelling:
/// at most a third of its characters (and at least one) inserted, deleted, changed or swapped,
/// letter case ignored. Ties go to the first.
pub fn closest<'a>(wrong: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wrong_lower = wrong.to_lowercase();
    let most = (wrong.chars().count() / 3).max(1);
    known
        .into_iter()
        .filter(|candidate| *candidate != wrong)
        .map(|candidate| {
            (strsim::damerau_levenshtein(&wrong_lower, &candidate.to_lowercase()), candidate)
        })
        .filter(|(distance, _)| *distance <= most)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// `"; did you mean `x`?"` when [`closest`] finds `x`, else nothing.
pub fn did_you_mean<'a>(wrong: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    closest(wrong, known).map(|name| format!("; did you mean `{name}`?")).unwrap_or_default()
}

/// A name a deserializer refused and the names it expected, read from serde's own message
/// (`unknown field `x`, expected one of `a`, `b``, `unknown variant `x`, expected `a` or `b``):
/// serde's derived code alone knows the expected names, and says them only there.
pub fn unknown_name(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (wrong, expected) = rest.split_once('`')?;
    // Every other piece between backticks is an expected name.
    let names = expected.split('`').skip(1).step_by(2).collect();
    Some((wrong, names))
}

/// `message` with the closest expected name suggested when it is serde's refusal of an unknown
/// field or variant ([`unknown_name`]); otherwise as it is.
pub fn with_suggestion(message: &str) -> String {
    match unknown_name(message) {
        Some((wrong, expected)) => format!("{message}{}", did_you_mean(wrong, expected)),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_name_is_suggested_and_a_far_one_is_not() {
        let ids = ["article", "quantity", "warehouse"];
        assert_eq!(closest("artcle", ids), Some("article"));
        assert_eq!(closest("Article", ids), Some("article"), "case is a misspelling too");
        assert_eq!(closest("qunatity", ids), Some("quantity"), "a swap is one edit");
        assert_eq!(closest("price", ids), None);
        assert_eq!(closest("article", ids), None, "the name itself is no suggestion");
        assert_eq!(closest("ab", ["ac", "xy"]), Some("ac"), "one edit even in a short name");
        assert_eq!(did_you_mean("warehose", ids), "; did you mean `warehouse`?");
        assert_eq!(did_you_mean("sku", ids), "");
    }

    #[test]
    fn serdes_unknown_field_and_variant_messages_get_the_closest_expected_name() {
        assert_eq!(
            with_suggestion("unknown field `treads`, expected `concurrency` or `lease`"),
            "unknown field `treads`, expected `concurrency` or `lease`"
        );
        assert_eq!(
            with_suggestion("unknown field `leese`, expected `concurrency` or `lease`"),
            "unknown field `leese`, expected `concurrency` or `lease`; did you mean `lease`?"
        );
        assert_eq!(
            with_suggestion(
                "unknown field `retyr`, expected one of `code`, `kind`, `retry`, `on_failure`"
            ),
            "unknown field `retyr`, expected one of `code`, `kind`, `retry`, `on_failure`; did you mean `retry`?"
        );
        assert_eq!(
            with_suggestion("unknown variant `fallbak`, expected `fallback` or `dead_letter`"),
            "unknown variant `fallbak`, expected `fallback` or `dead_letter`; did you mean `fallback`?"
        );
        assert_eq!(with_suggestion("invalid type: string \"x\""), "invalid type: string \"x\"");
        assert_eq!(unknown_name("unknown field `x`, there are no fields"), Some(("x", vec![])));
    }
}
