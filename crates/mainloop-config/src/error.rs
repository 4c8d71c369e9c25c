//! `ConfigError`: every way loading can fail, each naming the offending key and where it came from.

use std::path::PathBuf;

/// A configuration problem, phrased for the person editing the config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file was asked for explicitly but is not there.
    #[error("config file {} (given by {origin}) does not exist", path.display())]
    MissingFile {
        /// The path that was asked for.
        path: PathBuf,
        /// `--config` or `MAINLOOP_CONFIG`.
        origin: &'static str,
    },

    /// A key that mainloop does not know, usually a typo.
    #[error(
        "unknown configuration key `{key}` in {origin}{}",
        expected_hint(expected)
    )]
    UnknownKey {
        /// Dotted key path, e.g. `model.nme`.
        key: String,
        /// The file or environment variable it came from.
        origin: String,
        /// The keys that are valid at that level.
        expected: Vec<String>,
    },

    /// A value of the wrong type or shape.
    #[error("invalid value for `{key}` in {origin}: {message}")]
    InvalidValue {
        /// Dotted key path.
        key: String,
        /// The file or environment variable it came from.
        origin: String,
        /// What is wrong.
        message: String,
    },

    /// A source could not be read or parsed at all (e.g. TOML syntax error).
    #[error("cannot read configuration from {origin}: {message}")]
    Source {
        /// The file or environment variable.
        origin: String,
        /// The parser's complaint.
        message: String,
    },

    /// The merged configuration is well-formed but not usable.
    #[error("invalid configuration: `{key}` {message}")]
    Invalid {
        /// Dotted key path.
        key: &'static str,
        /// What is wrong, and what would be accepted.
        message: String,
    },

    /// An `[agents.<name>]` table (or the built-in it changes) is not usable.
    #[error("invalid configuration: `agents.{name}` {message}")]
    Agent {
        /// The agent's name as written.
        name: String,
        /// What is wrong, and what would be accepted.
        message: String,
    },

    /// A relevant environment variable holds bytes that are not UTF-8.
    #[error("environment variable {name} is not valid UTF-8")]
    NotUnicode {
        /// The variable's name.
        name: String,
    },

    /// The configuration could not be rendered back to TOML.
    #[error("cannot render configuration as TOML: {0}")]
    Render(String),
}

fn expected_hint(expected: &[String]) -> String {
    if expected.is_empty() {
        String::new()
    } else {
        format!(" (expected one of: {})", expected.join(", "))
    }
}
