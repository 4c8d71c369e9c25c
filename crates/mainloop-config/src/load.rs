//! Layering: finding the config file, mapping environment variables onto keys, merging with
//! figment, and turning figment's errors into `ConfigError`s that name key and source.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use crate::{CONFIG_FILE_NAME, Config, ConfigError, default_data_dir};

/// Prefix of mainloop's own environment variables.
const PREFIX: &str = "MAINLOOP_";

/// Names the config file; read before any layering, so it is not a config key itself.
const CONFIG_VAR: &str = "MAINLOOP_CONFIG";

/// Also decides where `mainloop.toml` is looked for, before the file is read.
const DATA_DIR_VAR: &str = "MAINLOOP_DATA_DIR";

/// `MAINLOOP_*` variables that belong to building, developing and testing mainloop, not to
/// its configuration: a shell that exports one (the README documents several) must still
/// start the server. Anything else with the prefix is a configuration key, so a misspelt
/// key is still refused.
pub const NOT_CONFIGURATION: &[&str] = &[
    // The web app: a prebuilt copy to embed, and the Vite dev server's upstream.
    "MAINLOOP_WEB_DIST",
    "MAINLOOP_DEV_API",
    // The askpass helper's password, set only in git's environment.
    "MAINLOOP_GIT_PASSWORD",
    // Tests and benchmarks.
    "MAINLOOP_UPDATE_OPENAPI",
    "MAINLOOP_UPDATE_README",
    "MAINLOOP_FUZZ_SCALE",
    "MAINLOOP_BENCH",
    "MAINLOOP_BENCH_KEEP",
    "MAINLOOP_BIN_DIR",
    "MAINLOOP_CHROMIUM",
    // The command-line client's server and token.
    "MAINLOOP_SERVER",
    "MAINLOOP_TOKEN",
    // `mainloop runner`'s token and flags.
    "MAINLOOP_RUNNER_TOKEN",
    "MAINLOOP_RUNNER_DATA_DIR",
    "MAINLOOP_RUNNER_SANDBOX",
];

/// Variables other tools already use for the same settings. They sit below `MAINLOOP_*` so an
/// explicit mainloop setting beats an ambient one inherited from the shell.
const CONVENTIONAL: &[(&str, &str)] = &[
    ("DATABASE_URL", "database_url"),
    ("ANTHROPIC_API_KEY", "model.api_key"),
    ("ANTHROPIC_BASE_URL", "model.base_url"),
    ("GITHUB_TOKEN", "github.token"),
    ("GITHUB_API_URL", "github.api_url"),
];

/// The Services Kubernetes announced to this process by their variables: the `<NAME>`
/// of each `MAINLOOP…_SERVICE_HOST`.
fn services(names: impl Iterator<Item = String>) -> Vec<String> {
    names
        .filter(|n| n.starts_with(PREFIX))
        .filter_map(|n| n.strip_suffix("_SERVICE_HOST").map(str::to_owned))
        .collect()
}

/// Whether `name` is one of the variables Kubernetes gives a container for a Service in
/// its namespace — `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<port>]`,
/// `<NAME>_PORT[_<n>_<proto>[_…]]` — of a Service named `mainloop…`: not configuration,
/// though it would read as an unknown key and stop the server.
fn is_service_link(name: &str, services: &[String]) -> bool {
    services.iter().any(|service| {
        name.strip_prefix(service.as_str()).is_some_and(|rest| {
            rest == "_SERVICE_HOST"
                || rest == "_SERVICE_PORT"
                || rest.starts_with("_SERVICE_PORT_")
                || rest == "_PORT"
                || rest.starts_with("_PORT_")
        })
    })
}

/// The process environment, restricted to the variables loading looks at, so unrelated
/// non-UTF-8 variables cannot break startup.
pub(crate) fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut env = Vec::new();
    let services = services(std::env::vars_os().filter_map(|(n, _)| n.into_string().ok()));
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let relevant = (name.starts_with(PREFIX)
            && !NOT_CONFIGURATION.contains(&name)
            && !is_service_link(name, &services))
            || CONVENTIONAL.iter().any(|(var, _)| *var == name);
        if !relevant {
            continue;
        }
        let value = value.into_string().map_err(|_| ConfigError::NotUnicode {
            name: name.to_owned(),
        })?;
        env.push((name.to_owned(), value));
    }
    Ok(env)
}

pub(crate) fn load(
    explicit_file: Option<&Path>,
    env: &[(String, String)],
) -> Result<Config, ConfigError> {
    // An empty variable is treated as unset: `FOO=` in a compose file or shell usually means
    // "nothing", not "the empty string".
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };

    let default_dir = default_data_dir();
    let search_dir = lookup(DATA_DIR_VAR)
        .map(PathBuf::from)
        .or_else(|| default_dir.clone());
    let file = locate_file(explicit_file, lookup(CONFIG_VAR), search_dir.as_deref())?;

    let mut figment = Figment::from(Serialized::defaults(Config::defaults_in(
        default_dir.unwrap_or_default(),
    )));
    if let Some(file) = &file {
        figment = figment.merge(Toml::file_exact(file));
    }
    for (var, key) in CONVENTIONAL {
        if let Some(value) = lookup(var) {
            figment = figment.merge(EnvVar::new(var, key, value));
        }
    }
    for (name, value) in env {
        if value.is_empty() || name == CONFIG_VAR || NOT_CONFIGURATION.contains(&name.as_str()) {
            continue;
        }
        if let Some(rest) = name.strip_prefix(PREFIX) {
            let key = rest.to_ascii_lowercase().replace("__", ".");
            figment = figment.merge(EnvVar::new(name, &key, value));
        }
    }

    // Lossy: environment values are strings, and "8" must be able to fill a number field
    // while "12345" must stay a string for an API key; typed TOML values pass through.
    let config: Config = figment.extract_lossy().map_err(|e| convert_error(&e))?;
    config.validate()?;
    Ok(config)
}

fn locate_file(
    explicit: Option<&Path>,
    from_env: Option<&str>,
    data_dir: Option<&Path>,
) -> Result<Option<PathBuf>, ConfigError> {
    let required = match (explicit, from_env) {
        (Some(path), _) => Some((path.to_path_buf(), "--config")),
        (None, Some(path)) => Some((PathBuf::from(path), CONFIG_VAR)),
        (None, None) => None,
    };
    if let Some((path, origin)) = required {
        // figment silently treats a missing file as empty; a file the user named must exist.
        return if path.is_file() {
            Ok(Some(path))
        } else {
            Err(ConfigError::MissingFile { path, origin })
        };
    }
    Ok(data_dir
        .map(|dir| dir.join(CONFIG_FILE_NAME))
        .into_iter()
        .chain([PathBuf::from(CONFIG_FILE_NAME)])
        .find(|path| path.is_file()))
}

/// One environment variable as a figment provider, so errors can name the exact variable.
struct EnvVar {
    name: String,
    key: String,
    value: String,
}

impl EnvVar {
    fn new(name: &str, key: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        figment::util::nest(&self.key, Value::from(self.value.clone()))
            .into_dict()
            .map(|dict| Profile::Default.collect(dict))
            .ok_or_else(|| {
                figment::Error::from(format!("{} does not name a configuration key", self.name))
            })
    }
}

/// Maps figment's first error onto our variants. Only the first is reported: fixing it
/// usually changes the rest, and one precise message beats a wall of them.
fn convert_error(error: &figment::Error) -> ConfigError {
    let origin = error
        .metadata
        .as_ref()
        .map_or_else(|| "the configuration".to_owned(), describe_source);
    let key = error.path.join(".");
    match &error.kind {
        figment::error::Kind::UnknownField(field, expected) => ConfigError::UnknownKey {
            key: if key.is_empty() {
                field.clone()
            } else if key.ends_with(field.as_str()) {
                key
            } else {
                format!("{key}.{field}")
            },
            origin,
            expected: expected.iter().map(|s| (*s).to_owned()).collect(),
        },
        figment::error::Kind::Message(message) if key.is_empty() => ConfigError::Source {
            origin,
            message: message.clone(),
        },
        kind => ConfigError::InvalidValue {
            key,
            origin,
            message: kind.to_string(),
        },
    }
}

fn describe_source(metadata: &Metadata) -> String {
    match &metadata.source {
        Some(figment::Source::File(path)) => format!("{} {}", metadata.name, path.display()),
        _ => metadata.name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_kubernetes_sets_for_a_mainloop_service_are_not_configuration() {
        let env = [
            "MAINLOOP_SERVICE_HOST",
            "MAINLOOP_SERVICE_PORT",
            "MAINLOOP_SERVICE_PORT_HTTP",
            "MAINLOOP_PORT",
            "MAINLOOP_PORT_8080_TCP",
            "MAINLOOP_PORT_8080_TCP_ADDR",
            "MAINLOOP_POSTGRES_SERVICE_HOST",
            "MAINLOOP_POSTGRES_PORT_5432_TCP_PORT",
            "MAINLOOP_LISTEN",
            "MAINLOOP_WORKERS__PORT_RANGE",
            "MAINLOOP_LISTEN_PORT",
        ];
        let announced = services(env.iter().map(|n| (*n).to_owned()));
        assert_eq!(announced, ["MAINLOOP", "MAINLOOP_POSTGRES"]);
        let links: Vec<&str> = env
            .iter()
            .copied()
            .filter(|n| is_service_link(n, &announced))
            .collect();
        assert_eq!(links, &env[..8]);
        // Without a Service announced, a stray `_PORT` name stays a mistake to report.
        assert!(!is_service_link(
            "MAINLOOP_LISTEN_PORT",
            &services(std::iter::empty())
        ));
    }
}
