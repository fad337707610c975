//! Where each setting's value came from, for `sluice check`: the default, a line of the file
//! (and the environment variables its `${VAR}` references read), a `SLUICE_<NAME>` variable or
//! a command-line flag.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use indexmap::IndexMap;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::interpolate::Rewritten;

/// Where one value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// Written on this line of the file; the variables its references read, and whether each
    /// was set (unset or empty ones gave their default, where there was one).
    File {
        line: u64,
        env: Vec<(String, bool)>,
    },
    /// The environment variable that set it (`SLUICE_WORKERS`, `WEB_CONCURRENCY`).
    Env(String),
    /// The command line: the flag or argument that set it.
    Flag(String),
}

/// The origins of the settings of each app (in the order of [`Config::apps`]) and of the
/// gateway-wide ones, by YAML key; a key left out is a default.
///
/// [`Config::apps`]: super::Config::apps
#[derive(Debug, Clone, Default)]
pub struct Origins {
    pub apps: Vec<IndexMap<String, Origin>>,
    pub gateway: IndexMap<String, Origin>,
}

impl Origins {
    /// Where app `index`'s `key` came from.
    pub fn app(&self, index: usize, key: &str) -> &Origin {
        self.apps
            .get(index)
            .and_then(|keys| keys.get(key))
            .unwrap_or(&Origin::Default)
    }

    /// Where the gateway-wide `key` came from.
    pub fn gateway(&self, key: &str) -> &Origin {
        self.gateway.get(key).unwrap_or(&Origin::Default)
    }
}

/// An origin as `sluice check` prints it, with the file's name.
pub(super) struct Shown<'a> {
    pub(super) origin: &'a Origin,
    pub(super) file: Option<&'a Path>,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Origin::Default => f.write_str("default"),
            Origin::Env(name) => write!(f, "environment {name}"),
            Origin::Flag(flag) => write!(f, "command line {flag}"),
            Origin::File { line, env } => {
                let file = self.file.map(|p| p.display().to_string());
                write!(f, "{}:{line}", file.as_deref().unwrap_or("file"))?;
                for (index, (name, set)) in env.iter().enumerate() {
                    let sep = if index == 0 { " " } else { ", " };
                    if *set {
                        write!(f, "{sep}${{{name}}} from the environment")?;
                    } else {
                        write!(f, "{sep}${{{name}}} unset: its default")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The keys of the file with their places: the top level's and each app's.
#[derive(Deserialize)]
struct Keys {
    #[serde(default)]
    apps: IndexMap<Spanned<String>, IndexMap<Spanned<String>, IgnoredAny>>,
}

/// The origins of what a file sets. `rewritten` is what the parser read (the file has
/// parsed already, so this cannot fail; if it did, every value would show as a default).
pub(super) fn file_origins(
    rewritten: &Rewritten,
    options: impl Fn() -> serde_saphyr::Options,
    env: &HashMap<String, String>,
) -> Origins {
    let top: IndexMap<Spanned<String>, IgnoredAny> =
        serde_saphyr::from_str_with_options(&rewritten.text, options()).unwrap_or_default();
    let apps = serde_saphyr::from_str_with_options::<Keys>(&rewritten.text, options())
        .map(|keys| keys.apps)
        .unwrap_or_default();
    // Every key's place, in file order: a value runs from its key to the next key.
    let mut places: Vec<(u64, u64)> = top
        .keys()
        .chain(apps.keys())
        .chain(apps.values().flat_map(|keys| keys.keys()))
        .map(|key| rewritten.original(key.referenced.line(), key.referenced.column()))
        .collect();
    places.sort_unstable();
    let origin = |key: &Spanned<String>| {
        let at = rewritten.original(key.referenced.line(), key.referenced.column());
        let end = places.iter().find(|&&p| p > at).copied();
        let mut used: Vec<(String, bool)> = Vec::new();
        for (line, column, name) in &rewritten.references {
            let place = (*line, *column);
            if place > at
                && end.is_none_or(|end| place < end)
                && !used.iter().any(|(n, _)| n == name)
            {
                let set = env.get(name).is_some_and(|v| !v.is_empty());
                used.push((name.clone(), set));
            }
        }
        Origin::File {
            line: at.0,
            env: used,
        }
    };
    let canonical = |key: &str| match key {
        "thread_workers" => "threads".to_owned(),
        other => other.to_owned(),
    };
    let gateway: IndexMap<String, Origin> = top
        .keys()
        .filter(|key| key.value != "apps")
        .map(|key| (key.value.clone(), origin(key)))
        .collect();
    let apps = apps
        .values()
        .map(|keys| {
            let mut origins: IndexMap<String, Origin> = keys
                .keys()
                .map(|key| (canonical(&key.value), origin(key)))
                .collect();
            if let Some(python) = gateway.get("python") {
                origins
                    .entry("python".to_owned())
                    .or_insert_with(|| python.clone());
            }
            origins
        })
        .collect();
    Origins { apps, gateway }
}

/// The origins of `serve`'s settings, from what clap saw: each option by its YAML key.
pub(super) fn command_line_origins(
    command: &clap::Command,
    matches: &clap::ArgMatches,
) -> IndexMap<String, Origin> {
    use clap::parser::ValueSource;
    let mut origins = IndexMap::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let origin = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => match arg.get_long() {
                Some(long) => Origin::Flag(format!("--{long}")),
                None => Origin::Flag(arg.get_value_names().map_or(id.to_owned(), |names| {
                    names
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })),
            },
            Some(ValueSource::EnvVariable) => Origin::Env(
                arg.get_env()
                    .map_or(id.to_owned(), |env| env.to_string_lossy().into_owned()),
            ),
            _ => continue,
        };
        let key = match id {
            "thread_workers" => "threads",
            "static_dirs" => "static",
            other => other,
        };
        origins.insert(key.to_owned(), origin);
    }
    origins
}
