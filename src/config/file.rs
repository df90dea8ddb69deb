//! The YAML configuration file (`--config spanlake.yaml`), and the
//! configuration in effect as `/status/config` shows it.
//!
//! The file has one section per flag group (`storage`, `server`, `ingester`,
//! `querier`, `compactor`, `logging`); a key is the flag's name, with `_` or
//! `-`:
//!
//! ```yaml
//! storage:
//!   storage: s3://traces/prod
//!   s3_endpoint: http://seaweedfs:8333
//! ingester:
//!   min_flush_interval: 100ms
//! compactor:
//!   retention: 7days
//!   tenant_retention: [team-a=3days]
//! ```
//!
//! Its values become the flags' defaults, so a flag or a `SPANLAKE_*`
//! variable overrides them, and they go through the same parsers (a bad
//! value is reported with the flag it sets). A file may hold every role's
//! sections (one ConfigMap for a whole cluster): a role ignores the groups it
//! does not take, but a key that no role knows is an error.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// The largest configuration file read (a guard against pointing `--config`
/// at something that is not one).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A parsed configuration file: `(section, key)` to its values.
#[derive(Debug)]
pub(super) struct ConfigFile {
    path: PathBuf,
    values: BTreeMap<(String, String), Vec<String>>,
}

/// Where a flag goes in the file: its help section and its name, in snake case.
fn place(arg: &Arg) -> Option<(String, String)> {
    let section = arg.get_help_heading()?.to_ascii_lowercase();
    let key = arg.get_long()?.replace('-', "_");
    (key != "config").then_some((section, key))
}

/// Every place in `command` and its subcommands.
fn places(command: &Command, into: &mut BTreeMap<String, String>) {
    for arg in command.get_arguments() {
        if let Some((section, key)) = place(arg) {
            into.insert(key, section);
        }
    }
    for sub in command.get_subcommands() {
        places(sub, into);
    }
}

impl ConfigFile {
    /// The file named by `--config` in `args`, or else by `SPANLAKE_CONFIG`
    /// (when `use_env`); `None` when neither names one.
    pub(super) fn named_by(args: &[OsString], use_env: bool) -> Result<Option<Self>, String> {
        let mut named = None;
        let mut words = args.iter().skip(1);
        while let Some(word) = words.next() {
            let word = word.to_string_lossy();
            if word == "--" {
                break;
            } else if word == "--config" {
                named = words.next().map(PathBuf::from);
            } else if let Some(path) = word.strip_prefix("--config=") {
                named = Some(PathBuf::from(path));
            }
        }
        if named.is_none() && use_env {
            named = std::env::var_os("SPANLAKE_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from);
        }
        named.map(|path| Self::read(&path)).transpose()
    }

    fn read(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let size = std::fs::metadata(path).map_err(|e| format!("config file {shown}: {e}"))?.len();
        if size > MAX_FILE_BYTES {
            return Err(format!("config file {shown} is {size} bytes; a configuration is under {MAX_FILE_BYTES}"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("config file {shown}: {e}"))?;
        Self::parse(path, &text)
    }

    pub(super) fn parse(path: &Path, text: &str) -> Result<Self, String> {
        let shown = path.display();
        let document: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| format!("config file {shown} is not valid YAML: {e}"))?;
        let mut values = BTreeMap::new();
        let sections = match document {
            serde_yaml::Value::Null => return Ok(Self { path: path.to_owned(), values }),
            serde_yaml::Value::Mapping(sections) => sections,
            _ => return Err(format!("config file {shown}: expected sections such as `ingester:` at the top level")),
        };
        for (section, keys) in sections {
            let section = scalar(&section).ok_or_else(|| format!("config file {shown}: a section name is not text"))?;
            let keys = match keys {
                serde_yaml::Value::Null => continue,
                serde_yaml::Value::Mapping(keys) => keys,
                _ => return Err(format!("config file {shown}: section `{section}` must hold `key: value` lines")),
            };
            for (key, value) in keys {
                let key = scalar(&key)
                    .ok_or_else(|| format!("config file {shown}: a key in `{section}` is not text"))?
                    .replace('-', "_");
                let list = match value {
                    serde_yaml::Value::Null => continue,
                    serde_yaml::Value::Sequence(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>(),
                    other => scalar(&other).map(|v| vec![v]),
                };
                let list = list.ok_or_else(|| {
                    format!("config file {shown}: `{section}.{key}` must be a value or a list of values")
                })?;
                values.insert((section.clone(), key), list);
            }
        }
        Ok(Self { path: path.to_owned(), values })
    }

    /// `command` with this file's values as its flags' defaults, in every
    /// subcommand; an error names the first key that no flag has, or a key
    /// in the wrong section.
    pub(super) fn apply(&self, command: Command) -> Result<Command, String> {
        let mut known = BTreeMap::new();
        places(&command, &mut known);
        for (section, key) in self.values.keys() {
            match known.get(key) {
                Some(expected) if expected == section => {}
                Some(expected) => {
                    return Err(format!(
                        "config file {}: `{key}` belongs in section `{expected}:`, not `{section}:`",
                        self.path.display()
                    ));
                }
                None => {
                    return Err(format!(
                        "config file {}: unknown key `{section}.{key}` (keys are flag names: `--max-buffer` is `max_buffer`; see `spanlake run all --help`)",
                        self.path.display()
                    ));
                }
            }
        }
        Ok(self.defaults_into(command))
    }

    fn defaults_into(&self, command: Command) -> Command {
        command
            .mut_args(|arg| match place(&arg).and_then(|at| self.values.get(&at)) {
                Some(values) => arg.default_values(values.clone()),
                None => arg,
            })
            .mut_subcommands(|sub| self.defaults_into(sub))
    }

    fn has(&self, at: &(String, String)) -> bool {
        self.values.contains_key(at)
    }
}

fn scalar(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The configuration the parsed command runs with, as a YAML config file in
/// which every value says where it came from (`flag`, `env`, `file` or
/// `default`). Secrets are shown as `<redacted>`.
pub(super) fn effective(command: &Command, matches: &ArgMatches, file: Option<&ConfigFile>) -> String {
    let (mut command, mut matches) = (command, matches);
    while let Some((name, sub)) = matches.subcommand() {
        match command.find_subcommand(name) {
            Some(found) => (command, matches) = (found, sub),
            None => break,
        }
    }
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for arg in command.get_arguments() {
        let Some(at) = place(arg) else { continue };
        let id = arg.get_id().as_str();
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "env",
            Some(_) if file.is_some_and(|f| f.has(&at)) => "file",
            _ => "default",
        };
        let value = if at.1.contains("secret") && !raw.is_empty() {
            "\"<redacted>\"".to_owned()
        } else if matches!(arg.get_action(), ArgAction::Append) {
            format!("[{}]", raw.iter().map(|v| quoted(v)).collect::<Vec<_>>().join(", "))
        } else {
            raw.first().map_or_else(|| "null".to_owned(), |v| quoted(v))
        };
        let line = format!("  {}: {value}  # {source}", at.1);
        match sections.iter_mut().find(|(name, _)| *name == at.0) {
            Some((_, lines)) => lines.push(line),
            None => sections.push((at.0, vec![line])),
        }
    }
    let mut text = String::from("# The configuration in effect; each value says where it came from.\n");
    for (name, lines) in sections {
        text.push_str(&format!("{name}:\n{}\n", lines.join("\n")));
    }
    text
}

/// A YAML double-quoted string (JSON's escaping is valid YAML).
fn quoted(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}
