//! The environment in a YAML file's values, as Compose writes it: `${VAR}`, `${VAR:-default}`
//! (also when VAR is set but empty), `${VAR-default}` (only when unset), `$VAR`, and `$$` for a
//! literal `$`. The YAML parser substitutes in every scalar (quoted or not) before it reads the
//! value, so `workers: ${WORKERS:-2}` is a number and a value can never add keys or items.
//!
//! Compose makes an unset `${VAR}` empty; sluice refuses it, at the `${`. To get that from the
//! parser, every reference without a default is rewritten to Compose's `${VAR?}` (an error when
//! unset) before parsing. The rewrite only inserts characters, never lines, and [`Rewritten`]
//! maps a place in the rewritten text back to the file as written, for every later error too.

use std::collections::HashMap;

/// The file's text with every reference that has no default made required, and where
/// characters were inserted.
pub(super) struct Rewritten {
    pub(super) text: String,
    /// Per line (0-based), the insertions: the 1-based column of the first inserted character
    /// in the rewritten line, and how many were inserted there.
    insertions: Vec<Vec<(u64, u64)>>,
}

/// What the parser is given to substitute: the process's environment (variables that are not
/// UTF-8 are left out, as if unset).
pub(super) fn environment() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

/// The parser's options: Compose's substitution from `vars`.
pub(super) fn parse_options(vars: HashMap<String, String>) -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default().with_properties(vars);
    options.property_syntax = serde_saphyr::options::PropertySyntax::DockerCompose;
    options
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

/// A reference without a default at the start of `rest` (which starts with `$`): `${NAME}` or
/// `$NAME`, as (the name, whether braced). `$$` is not one.
fn required_reference(rest: &str) -> Option<(&str, bool)> {
    let after = rest.strip_prefix('$')?;
    let (body, braced) = match after.strip_prefix('{') {
        Some(body) => (body, true),
        None => (after, false),
    };
    if !body.starts_with(is_name_start) {
        return None;
    }
    let end = body.find(|c| !is_name_char(c)).unwrap_or(body.len());
    if braced && !body[end..].starts_with('}') {
        return None;
    }
    Some((&body[..end], braced))
}

impl Rewritten {
    /// `text` with each `${NAME}` and `$NAME` made `${NAME?}`; `$$` and references with an
    /// operator (`${NAME:-default}`) are left as they are, the references inside a default
    /// rewritten in turn.
    pub(super) fn new(text: &str) -> Rewritten {
        let mut out = String::with_capacity(text.len());
        let mut insertions = Vec::new();
        for line in text.split_inclusive('\n') {
            let mut inserted = Vec::new();
            let mut column = 1u64; // in the rewritten line
            let mut rest = line;
            while let Some(c) = rest.chars().next() {
                if rest.starts_with("$$") {
                    out.push_str("$$");
                    column += 2;
                    rest = &rest[2..];
                    continue;
                }
                if let Some((name, braced)) = required_reference(rest) {
                    let name_chars = name.chars().count() as u64;
                    if braced {
                        out.push_str(&format!("${{{name}?}}"));
                        inserted.push((column + 2 + name_chars, 1));
                        rest = &rest[name.len() + 3..];
                    } else {
                        out.push_str(&format!("${{{name}?}}"));
                        inserted.push((column + 1, 1));
                        inserted.push((column + 2 + name_chars, 2));
                        rest = &rest[name.len() + 1..];
                    }
                    column += name_chars + 4;
                    continue;
                }
                out.push(c);
                column += 1;
                rest = &rest[c.len_utf8()..];
            }
            insertions.push(inserted);
        }
        Rewritten {
            text: out,
            insertions,
        }
    }

    /// A place in the rewritten text as a place in the file as written (lines are the same).
    pub(super) fn original(&self, line: u64, column: u64) -> (u64, u64) {
        let Some(inserted) = line
            .checked_sub(1)
            .and_then(|i| self.insertions.get(i as usize))
        else {
            return (line, column);
        };
        let mut shift = 0;
        for &(at, count) in inserted {
            if column >= at + count {
                shift += count;
            } else if column >= at {
                // Inside inserted characters: the place they were inserted at.
                shift += column - at;
            }
        }
        (line, column - shift)
    }
}

/// Where, in the file as written and from `line`:`column` on, the first reference to `name`
/// without a default is: the place of its `$`.
pub(super) fn find_reference(text: &str, line: u64, column: u64, name: &str) -> Option<(u64, u64)> {
    for (index, content) in text
        .lines()
        .enumerate()
        .skip(line.saturating_sub(1) as usize)
    {
        let number = index as u64 + 1;
        let skip = if number == line {
            column.saturating_sub(1) as usize
        } else {
            0
        };
        let mut rest = content;
        let mut at = 1u64;
        while let Some(c) = rest.chars().next() {
            if rest.starts_with("$$") {
                rest = &rest[2..];
                at += 2;
                continue;
            }
            if at > skip as u64 && required_reference(rest).is_some_and(|(n, _)| n == name) {
                return Some((number, at));
            }
            rest = &rest[c.len_utf8()..];
            at += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_without_a_default_become_required() {
        let rewritten = Rewritten::new("a: ${A} $B $$C ${D:-${E}} $1 ${F-x} #\nb: é${G}\n");
        assert_eq!(
            rewritten.text,
            "a: ${A?} ${B?} $$C ${D:-${E?}} $1 ${F-x} #\nb: é${G?}\n"
        );
        // `a` and `b` stay where they were; so do the places after each insertion.
        assert_eq!(rewritten.original(1, 1), (1, 1));
        assert_eq!(rewritten.original(1, 10), (1, 9)); // the `$` of `$B`
        assert_eq!(rewritten.original(1, 16), (1, 12)); // the `$$` of `$$C`
        assert_eq!(rewritten.original(2, 5), (2, 5)); // the `$` after `é`
        assert_eq!(rewritten.original(3, 1), (3, 1));
    }

    #[test]
    fn the_reference_is_found_from_the_value_on() {
        let text = "a: $${X} ${X:-1}\nb: |\n  ok\n  x ${X}\n";
        assert_eq!(find_reference(text, 1, 4, "X"), Some((4, 5)));
        assert_eq!(find_reference(text, 2, 4, "Y"), None);
        assert_eq!(find_reference("a: $X\n", 1, 4, "X"), Some((1, 4)));
        assert_eq!(find_reference("a: $XY\n", 1, 4, "X"), None);
    }
}
