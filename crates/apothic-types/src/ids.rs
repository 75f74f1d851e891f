//! Object-id prefixes: `<prefix>-<ulid>`. `python/apothic/_ids.py` mirrors this table,
//! and `tests/unit/test_ids.py` checks that the two agree.

pub const PREFIXES: &[(&str, &str)] = &[
    ("app", "ap"),
    ("function", "fn"),
    ("function_call", "fc"),
    ("deployment", "dp"),
    ("worker", "wk"),
    ("container", "ct"),
    ("account", "ac"),
    ("blob", "bl"),
    ("queue", "qu"),
    ("queue_item", "qi"),
    ("dict", "di"),
    ("sandbox", "sb"),
];

/// The prefix for a kind of object, if the kind is known.
pub fn prefix_for(kind: &str) -> Option<&'static str> {
    PREFIXES.iter().find(|(k, _)| *k == kind).map(|(_, p)| *p)
}

/// Whether `id` is well formed for `kind`: the prefix, a dash, then 26 Crockford base32 characters.
pub fn is_valid(kind: &str, id: &str) -> bool {
    let Some(prefix) = prefix_for(kind) else {
        return false;
    };
    let Some(rest) = id.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    rest.len() == 26
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_prefix_and_body() {
        assert!(is_valid("function_call", "fc-01J0000000000000000000000A"));
        assert!(!is_valid("function_call", "fn-01J0000000000000000000000A"));
        assert!(!is_valid("function_call", "fc-short"));
        assert!(!is_valid("nope", "fc-01J0000000000000000000000A"));
    }
}
