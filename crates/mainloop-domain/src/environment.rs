//! A task's environment as the repository declares it (`.mainloop.toml`, read at the
//! base branch) and the project's settings override: setup commands, files copied in
//! from the main checkout, extra variables, how many ports, a database, the preview
//! command. Parsing is strict: every value that could reach outside the worktree, a
//! reserved variable, or the server's resources is refused with the key and the rule.

use std::collections::BTreeMap;

use serde_json::Value;

/// Most setup commands a repository may declare.
pub const MAX_SETUP_COMMANDS: usize = 20;
/// Longest setup or preview command, and longest variable value, in characters.
pub const MAX_COMMAND_CHARS: usize = 4000;
/// Setup timeout when none is declared.
pub const DEFAULT_SETUP_TIMEOUT_SECS: u64 = 900;
/// Longest setup timeout a repository may ask for.
pub const MAX_SETUP_TIMEOUT_SECS: u64 = 7200;
/// Most `copy` patterns.
pub const MAX_COPY_PATTERNS: usize = 50;
/// Most extra variables.
pub const MAX_ENV_VARS: usize = 100;
/// Most ports one task may hold.
pub const MAX_PORTS: u8 = 8;

/// The keys this module reads; the file's other keys (`check`) belong to others.
pub const KEYS: [&str; 7] = [
    "setup",
    "setup_timeout_secs",
    "copy",
    "env",
    "ports",
    "database",
    "preview",
];

/// A database made for each task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskDatabase {
    Postgres,
}

/// What a task's environment needs, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvSpec {
    /// Shell commands run in a new worktree before the agent starts.
    pub setup: Vec<String>,
    pub setup_timeout_secs: u64,
    /// Relative paths or globs in the main checkout, copied into the worktree.
    pub copy: Vec<String>,
    /// Extra variables for everything run for the task.
    pub env: BTreeMap<String, String>,
    /// How many ports the task holds (`PORT`, `PORT_1`, …).
    pub ports: u8,
    pub database: Option<TaskDatabase>,
    /// The command that serves a live preview on `$PORT`.
    pub preview: Option<String>,
}

impl Default for EnvSpec {
    fn default() -> Self {
        Self {
            setup: Vec::new(),
            setup_timeout_secs: DEFAULT_SETUP_TIMEOUT_SECS,
            copy: Vec::new(),
            env: BTreeMap::new(),
            ports: 0,
            database: None,
            preview: None,
        }
    }
}

impl EnvSpec {
    /// The spec from the whole `.mainloop.toml` as JSON (an object; `Null` for no
    /// file). Keys other than [`KEYS`] are ignored.
    ///
    /// # Errors
    /// The first wrong value, naming its key and what is allowed.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let obj = match value {
            Value::Null => return Ok(Self::default()),
            Value::Object(obj) => obj,
            other => {
                return Err(format!(
                    "the environment must be a table, not {}",
                    kind(other)
                ));
            }
        };
        let mut spec = Self::default();
        if let Some(v) = obj.get("setup") {
            spec.setup = setup(v)?;
        }
        if let Some(v) = obj.get("setup_timeout_secs") {
            spec.setup_timeout_secs = match v.as_u64() {
                Some(n @ 1..=MAX_SETUP_TIMEOUT_SECS) => n,
                _ => {
                    return Err(format!(
                        "`setup_timeout_secs` must be a whole number of seconds from 1 to {MAX_SETUP_TIMEOUT_SECS}, not {v}"
                    ));
                }
            };
        }
        if let Some(v) = obj.get("copy") {
            spec.copy = copy(v)?;
        }
        if let Some(v) = obj.get("env") {
            spec.env = env(v)?;
        }
        if let Some(v) = obj.get("ports") {
            spec.ports = match v.as_u64().and_then(|n| u8::try_from(n).ok()) {
                Some(n) if n <= MAX_PORTS => n,
                _ => {
                    return Err(format!(
                        "`ports` must be a whole number from 0 to {MAX_PORTS}, not {v}"
                    ));
                }
            };
        }
        if let Some(v) = obj.get("database") {
            spec.database = match v.as_str() {
                Some("postgres") => Some(TaskDatabase::Postgres),
                _ => return Err(format!("`database` may only be \"postgres\", not {v}")),
            };
        }
        if let Some(v) = obj.get("preview") {
            let cmd = command("preview", v)?;
            spec.preview = Some(cmd).filter(|c| !c.is_empty());
        }
        Ok(spec)
    }

    /// The spec from the repository's file with the project's `settings` keys of the
    /// same names in place of the file's.
    ///
    /// # Errors
    /// As [`EnvSpec::from_value`], for whichever value is used.
    pub fn with_settings(file: &Value, settings: &Value) -> Result<Self, String> {
        let mut merged = match file {
            Value::Object(obj) => obj.clone(),
            Value::Null => serde_json::Map::new(),
            other => {
                return Err(format!(
                    "the environment must be a table, not {}",
                    kind(other)
                ));
            }
        };
        if let Value::Object(over) = settings {
            for key in KEYS {
                if let Some(v) = over.get(key) {
                    merged.insert(key.to_owned(), v.clone());
                }
            }
        }
        Self::from_value(&Value::Object(merged))
    }

    /// Whether the task needs anything prepared at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.setup.is_empty()
            && self.copy.is_empty()
            && self.env.is_empty()
            && self.ports == 0
            && self.database.is_none()
            && self.preview.is_none()
    }
}

/// Whether `name` is a variable mainloop sets itself, which a repository may not.
#[must_use]
pub fn reserved_var(name: &str) -> bool {
    matches!(name, "PATH" | "HOME" | "TMPDIR" | "PORT" | "DATABASE_URL")
        || name.starts_with("MAINLOOP_")
        || name
            .strip_prefix("PORT_")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The variables a task's ports are passed as: `PORT`, then `PORT_1`, `PORT_2`, ….
#[must_use]
pub fn port_vars(ports: &[u16]) -> Vec<(String, String)> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = if i == 0 {
                "PORT".to_owned()
            } else {
                format!("PORT_{i}")
            };
            (name, p.to_string())
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// A list of strings; one string counts as a list of one.
fn strings<'a>(key: &str, v: &'a Value, max: usize) -> Result<Vec<&'a str>, String> {
    let items: Vec<&Value> = match v {
        Value::String(_) => vec![v],
        Value::Array(items) => items.iter().collect(),
        other => {
            return Err(format!(
                "`{key}` must be a list of strings, not {}",
                kind(other)
            ));
        }
    };
    if items.len() > max {
        return Err(format!(
            "`{key}` may have at most {max} entries, not {}",
            items.len()
        ));
    }
    items
        .into_iter()
        .map(|item| {
            item.as_str().ok_or_else(|| {
                format!(
                    "every entry of `{key}` must be a string, not {}",
                    kind(item)
                )
            })
        })
        .collect()
}

fn command(key: &str, v: &Value) -> Result<String, String> {
    let Some(cmd) = v.as_str() else {
        return Err(format!("`{key}` must be a command string, not {}", kind(v)));
    };
    check_text(key, cmd)?;
    Ok(cmd.trim().to_owned())
}

fn check_text(key: &str, text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err(format!("`{key}` may not contain a NUL character"));
    }
    let chars = text.chars().count();
    if chars > MAX_COMMAND_CHARS {
        return Err(format!(
            "`{key}` may be at most {MAX_COMMAND_CHARS} characters, not {chars}"
        ));
    }
    Ok(())
}

fn setup(v: &Value) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for cmd in strings("setup", v, MAX_SETUP_COMMANDS)? {
        check_text("setup", cmd)?;
        let cmd = cmd.trim();
        if !cmd.is_empty() {
            out.push(cmd.to_owned());
        }
    }
    Ok(out)
}

fn copy(v: &Value) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for pattern in strings("copy", v, MAX_COPY_PATTERNS)? {
        check_copy_pattern(pattern)?;
        out.push(pattern.to_owned());
    }
    Ok(out)
}

/// A `copy` pattern names files inside the repository: relative, no `..`, not git's
/// own data.
fn check_copy_pattern(pattern: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("`copy` entry {pattern:?} {why}"));
    if pattern.contains('\0') {
        return refuse("may not contain a NUL character");
    }
    if pattern.trim().is_empty() {
        return refuse("is empty; give a path relative to the repository");
    }
    if pattern.len() > 1000 {
        return refuse("is longer than 1000 characters");
    }
    if pattern.starts_with('/') || pattern.starts_with('~') || pattern.contains('\\') {
        return refuse("must be a path relative to the repository (no leading / or ~, no \\)");
    }
    for part in pattern.split('/') {
        match part {
            ".." => return refuse("must stay inside the repository: `..` is not allowed"),
            ".git" => return refuse("may not name git's own data (.git)"),
            _ => {}
        }
    }
    Ok(())
}

fn env(v: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(vars) = v else {
        return Err(format!(
            "`env` must be a table of NAME = \"value\", not {}",
            kind(v)
        ));
    };
    if vars.len() > MAX_ENV_VARS {
        return Err(format!(
            "`env` may have at most {MAX_ENV_VARS} variables, not {}",
            vars.len()
        ));
    }
    let mut out = BTreeMap::new();
    for (name, value) in vars {
        if !valid_var_name(name) {
            return Err(format!(
                "`env` name {name:?} is not a variable name: letters, digits and _, not starting with a digit"
            ));
        }
        if reserved_var(name) {
            return Err(format!(
                "`env` may not set {name}: mainloop sets PATH, HOME, TMPDIR, PORT, PORT_<n>, DATABASE_URL and MAINLOOP_* itself"
            ));
        }
        let Some(value) = value.as_str() else {
            return Err(format!(
                "`env` value of {name} must be a string, not {}",
                kind(value)
            ));
        };
        check_text(&format!("env.{name}"), value)?;
        out.insert(name.clone(), value.to_owned());
    }
    Ok(out)
}

fn valid_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 200
}

#[cfg(test)]
#[path = "environment_tests.rs"]
mod tests;
