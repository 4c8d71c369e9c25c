//! Layering, validation and redaction of `Config`, through the public API only.
//!
//! Every test passes its environment explicitly (`load_from`) and points `MAINLOOP_DATA_DIR`
//! at a private temp dir, so tests neither race on the process environment nor pick up a
//! developer's real `mainloop.toml`.

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mainloop_config::{
    AgentProtocol, Config, ConfigError, EXAMPLE_TOML, ModelProviderKind, SandboxMode,
};
use tempfile::TempDir;

type TestResult = Result<(), Box<dyn Error>>;

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new() -> Result<Self, std::io::Error> {
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Environment with only the data dir set, plus `extra`.
    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = vec![(
            "MAINLOOP_DATA_DIR".to_owned(),
            self.data_dir().to_string_lossy().into_owned(),
        )];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    }

    fn write(&self, name: &str, contents: &str) -> Result<PathBuf, std::io::Error> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents)?;
        Ok(path)
    }
}

fn expect_err(result: Result<Config, ConfigError>) -> Result<ConfigError, Box<dyn Error>> {
    match result {
        Ok(config) => Err(format!("expected an error, got {config:?}").into()),
        Err(err) => Ok(err),
    }
}

#[test]
fn defaults() -> TestResult {
    let fx = Fixture::new()?;
    let config = Config::load_from(None, &fx.env(&[]))?;
    assert_eq!(config, Config::defaults_in(fx.data_dir().to_path_buf()));
    assert_eq!(config.listen, "127.0.0.1:8080".parse::<SocketAddr>()?);
    assert!(config.auth.enabled);
    assert_eq!(config.auth.session_ttl_hours, 720);
    assert_eq!(config.model.provider, None);
    assert_eq!(config.model.base_url, "https://api.anthropic.com");
    assert_eq!(config.model.name, "claude-sonnet-4-5");
    assert_eq!(config.model.max_tokens, 4096);
    assert_eq!(config.model.context_budget_tokens, 60_000);
    assert_eq!(config.model.request_timeout_secs, 300);
    assert_eq!(config.dispatcher.concurrency, 4);
    assert_eq!(config.dispatcher.lease_secs, 60);
    assert_eq!(config.dispatcher.max_attempts, 8);
    assert_eq!(config.dispatcher.backoff_base_ms, 500);
    assert_eq!(config.dispatcher.backoff_max_ms, 60_000);
    assert_eq!(config.limits.max_body_bytes, 1 << 20);
    assert_eq!(config.limits.max_chat_chars, 100_000);
    assert_eq!(config.log.filter, "info");
    assert!(!config.log.json);
    assert!(config.public_url.is_none());
    assert!(!config.model_configured());
    assert_eq!(
        config.database_url(),
        format!("sqlite://{}/mainloop.db", fx.data_dir().display())
    );
    Ok(())
}

#[test]
fn default_data_dir_is_the_per_user_location() {
    let default = Config::default();
    assert_eq!(
        default.data_dir,
        mainloop_config::default_data_dir().unwrap_or_default()
    );
    if let Some(dir) = mainloop_config::default_data_dir() {
        assert!(dir.ends_with("mainloop"), "{}", dir.display());
    }
}

#[test]
fn file_overrides_defaults() -> TestResult {
    let fx = Fixture::new()?;
    let file = fx.write(
        "custom.toml",
        r#"
listen = "0.0.0.0:9000"
public_url = "https://ml.example.com"
[model]
name = "claude-opus"
[dispatcher]
concurrency = 16
[log]
json = true
"#,
    )?;
    let config = Config::load_from(Some(&file), &fx.env(&[]))?;
    assert_eq!(config.listen, "0.0.0.0:9000".parse::<SocketAddr>()?);
    assert_eq!(config.public_url.as_deref(), Some("https://ml.example.com"));
    assert_eq!(config.model.name, "claude-opus");
    assert_eq!(config.dispatcher.concurrency, 16);
    assert!(config.log.json);
    // untouched keys keep their defaults
    assert_eq!(config.model.max_tokens, 4096);
    assert_eq!(config.dispatcher.lease_secs, 60);
    Ok(())
}

#[test]
fn env_overrides_file() -> TestResult {
    let fx = Fixture::new()?;
    let file = fx.write(
        "custom.toml",
        "listen = \"0.0.0.0:9000\"\n[model]\nname = \"from-file\"\nmax_tokens = 1000\n",
    )?;
    let env = fx.env(&[
        ("MAINLOOP_LISTEN", "127.0.0.1:7000"),
        ("MAINLOOP_MODEL__NAME", "from-env"),
        ("MAINLOOP_AUTH__ENABLED", "false"),
        ("MAINLOOP_LIMITS__MAX_BODY_BYTES", "2048"),
        ("MAINLOOP_MODEL__PROVIDER", "none"),
        ("MAINLOOP_LOG__FILTER", "debug,hyper=warn"),
        ("UNRELATED", "ignored"),
    ]);
    let config = Config::load_from(Some(&file), &env)?;
    assert_eq!(config.listen, "127.0.0.1:7000".parse::<SocketAddr>()?);
    assert_eq!(config.model.name, "from-env");
    assert_eq!(config.model.max_tokens, 1000, "file value survives");
    assert!(!config.auth.enabled);
    assert_eq!(config.limits.max_body_bytes, 2048);
    assert_eq!(config.model.provider, Some(ModelProviderKind::None));
    assert_eq!(config.log.filter, "debug,hyper=warn");
    Ok(())
}

#[test]
fn file_location_precedence() -> TestResult {
    let fx = Fixture::new()?;
    let explicit = fx.write("explicit.toml", "[model]\nname = \"explicit\"\n")?;
    let via_env = fx.write("via-env.toml", "[model]\nname = \"via-env\"\n")?;
    fx.write("mainloop.toml", "[model]\nname = \"in-data-dir\"\n")?;
    let via_env_str = via_env.to_string_lossy().into_owned();

    let config = Config::load_from(None, &fx.env(&[]))?;
    assert_eq!(config.model.name, "in-data-dir");

    let config = Config::load_from(None, &fx.env(&[("MAINLOOP_CONFIG", &via_env_str)]))?;
    assert_eq!(config.model.name, "via-env");

    let config = Config::load_from(
        Some(&explicit),
        &fx.env(&[("MAINLOOP_CONFIG", &via_env_str)]),
    )?;
    assert_eq!(config.model.name, "explicit");
    Ok(())
}

#[test]
fn named_file_must_exist() -> TestResult {
    let fx = Fixture::new()?;
    let missing = fx.data_dir().join("nope.toml");
    let err = expect_err(Config::load_from(Some(&missing), &fx.env(&[])))?;
    assert!(matches!(
        err,
        ConfigError::MissingFile {
            origin: "--config",
            ..
        }
    ));
    assert!(err.to_string().contains("nope.toml"), "{err}");

    let missing_str = missing.to_string_lossy().into_owned();
    let err = expect_err(Config::load_from(
        None,
        &fx.env(&[("MAINLOOP_CONFIG", &missing_str)]),
    ))?;
    assert!(err.to_string().contains("MAINLOOP_CONFIG"), "{err}");
    Ok(())
}

#[test]
fn conventional_env_vars_are_honoured() -> TestResult {
    let fx = Fixture::new()?;
    let env = fx.env(&[
        ("DATABASE_URL", "postgres://u:p@db/conventional"),
        ("ANTHROPIC_API_KEY", "12345"),
        ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9999"),
    ]);
    let config = Config::load_from(None, &env)?;
    assert_eq!(config.database_url(), "postgres://u:p@db/conventional");
    // numeric-looking keys must stay strings
    assert_eq!(
        config.model.api_key.as_ref().map(|k| k.expose()),
        Some("12345")
    );
    assert_eq!(config.model.base_url, "http://127.0.0.1:9999");
    assert!(config.model_configured());
    Ok(())
}

#[test]
fn mainloop_env_vars_win_over_conventional_ones() -> TestResult {
    let fx = Fixture::new()?;
    let file = fx.write("f.toml", "database_url = \"sqlite://from-file.db\"\n")?;
    // Order in the slice must not matter: MAINLOOP_* first, conventional after.
    let env = fx.env(&[
        ("MAINLOOP_DATABASE_URL", "postgres://u:p@db/mainloop"),
        ("MAINLOOP_MODEL__API_KEY", "sk-mainloop"),
        ("MAINLOOP_MODEL__BASE_URL", "http://mainloop.invalid"),
        ("DATABASE_URL", "postgres://u:p@db/conventional"),
        ("ANTHROPIC_API_KEY", "sk-conventional"),
        ("ANTHROPIC_BASE_URL", "http://conventional.invalid"),
    ]);
    let config = Config::load_from(Some(&file), &env)?;
    assert_eq!(config.database_url(), "postgres://u:p@db/mainloop");
    assert_eq!(
        config.model.api_key.as_ref().map(|k| k.expose()),
        Some("sk-mainloop")
    );
    assert_eq!(config.model.base_url, "http://mainloop.invalid");
    Ok(())
}

#[test]
fn conventional_env_vars_override_the_file() -> TestResult {
    let fx = Fixture::new()?;
    let file = fx.write("f.toml", "database_url = \"sqlite://from-file.db\"\n")?;
    let env = fx.env(&[("DATABASE_URL", "postgres://db/conventional")]);
    let config = Config::load_from(Some(&file), &env)?;
    assert_eq!(config.database_url(), "postgres://db/conventional");
    Ok(())
}

#[test]
fn empty_env_vars_count_as_unset() -> TestResult {
    let fx = Fixture::new()?;
    let env = fx.env(&[("ANTHROPIC_API_KEY", ""), ("MAINLOOP_MODEL__NAME", "")]);
    let config = Config::load_from(None, &env)?;
    assert!(config.model.api_key.is_none());
    assert_eq!(config.model.name, "claude-sonnet-4-5");
    Ok(())
}

#[test]
fn unknown_key_in_file_is_an_error_naming_it() -> TestResult {
    let fx = Fixture::new()?;
    let file = fx.write("typo.toml", "[model]\nnmae = \"x\"\n")?;
    let err = expect_err(Config::load_from(Some(&file), &fx.env(&[])))?;
    let message = err.to_string();
    assert!(
        matches!(&err, ConfigError::UnknownKey { key, .. } if key == "model.nmae"),
        "{err:?}"
    );
    assert!(message.contains("model.nmae"), "{message}");
    assert!(message.contains("typo.toml"), "{message}");
    assert!(message.contains("name"), "suggests valid keys: {message}");

    let file = fx.write("top.toml", "lisen = \"127.0.0.1:1\"\n")?;
    let err = expect_err(Config::load_from(Some(&file), &fx.env(&[])))?;
    assert!(
        matches!(&err, ConfigError::UnknownKey { key, .. } if key == "lisen"),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn unknown_mainloop_env_var_is_an_error_naming_it() -> TestResult {
    let fx = Fixture::new()?;
    let err = expect_err(Config::load_from(
        None,
        &fx.env(&[("MAINLOOP_MODEL__NMAE", "x")]),
    ))?;
    let message = err.to_string();
    assert!(message.contains("model.nmae"), "{message}");
    assert!(message.contains("MAINLOOP_MODEL__NMAE"), "{message}");
    Ok(())
}

#[test]
fn build_and_tooling_variables_are_not_configuration() -> TestResult {
    let fx = Fixture::new()?;
    let tooling: Vec<(&str, &str)> = mainloop_config::NOT_CONFIGURATION
        .iter()
        .map(|name| (*name, "/somewhere"))
        .collect();
    let config = Config::load_from(None, &fx.env(&tooling))?;
    assert_eq!(config.data_dir, fx.data_dir());
    // A misspelt key of mainloop's own is still refused.
    let err = expect_err(Config::load_from(None, &fx.env(&[("MAINLOOP_LISTN", "x")])))?;
    assert!(err.to_string().contains("MAINLOOP_LISTN"), "{err}");
    Ok(())
}

/// Every `MAINLOOP_*` variable the README tells the reader to set either configures
/// mainloop or is known not to, so exporting it never stops the server from starting.
#[test]
fn every_variable_the_readme_names_loads() -> TestResult {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))?;
    let mut names: Vec<&str> = readme
        .match_indices("MAINLOOP_")
        .map(|(i, _)| {
            let rest = &readme[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches('_')
        })
        .filter(|name| *name != "MAINLOOP" && !name.contains("__"))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.contains(&"MAINLOOP_DEV_API") && names.contains(&"MAINLOOP_WEB_DIST"));
    let fx = Fixture::new()?;
    let dir = fx.data_dir().to_string_lossy().into_owned();
    for name in names {
        let value = match name {
            "MAINLOOP_LISTEN" => "127.0.0.1:9999",
            "MAINLOOP_DATABASE_URL" => "sqlite://x.db",
            "MAINLOOP_PUBLIC_URL" => "https://example.com",
            "MAINLOOP_CONFIG" => continue,
            _ => dir.as_str(),
        };
        if let Err(e) = Config::load_from(None, &fx.env(&[(name, value)])) {
            return Err(format!("exporting {name} stops mainloop: {e}").into());
        }
    }
    Ok(())
}

#[test]
fn bad_values_name_their_key_and_source() -> TestResult {
    let fx = Fixture::new()?;
    let err = expect_err(Config::load_from(
        None,
        &fx.env(&[("MAINLOOP_LISTEN", "not-an-address")]),
    ))?;
    let message = err.to_string();
    assert!(message.contains("`listen`"), "{message}");
    assert!(message.contains("MAINLOOP_LISTEN"), "{message}");

    let file = fx.write("bad.toml", "[dispatcher]\nconcurrency = \"lots\"\n")?;
    let err = expect_err(Config::load_from(Some(&file), &fx.env(&[])))?;
    let message = err.to_string();
    assert!(message.contains("dispatcher.concurrency"), "{message}");
    assert!(message.contains("bad.toml"), "{message}");

    let file = fx.write("syntax.toml", "listen = \n")?;
    let err = expect_err(Config::load_from(Some(&file), &fx.env(&[])))?;
    assert!(err.to_string().contains("syntax.toml"), "{err}");
    Ok(())
}

#[test]
fn validation_names_the_offending_key() -> TestResult {
    let fx = Fixture::new()?;
    let cases: &[(&str, &str, &str)] = &[
        (
            "MAINLOOP_LIMITS__MAX_BODY_BYTES",
            "0",
            "limits.max_body_bytes",
        ),
        (
            "MAINLOOP_LIMITS__MAX_CHAT_CHARS",
            "0",
            "limits.max_chat_chars",
        ),
        (
            "MAINLOOP_DISPATCHER__CONCURRENCY",
            "0",
            "dispatcher.concurrency",
        ),
        (
            "MAINLOOP_DISPATCHER__BACKOFF_MAX_MS",
            "10",
            "dispatcher.backoff_max_ms",
        ),
        (
            "MAINLOOP_MODEL__BASE_URL",
            "api.anthropic.com",
            "model.base_url",
        ),
        (
            "MAINLOOP_MODEL__CONTEXT_BUDGET_TOKENS",
            "100",
            "model.context_budget_tokens",
        ),
        ("MAINLOOP_PUBLIC_URL", "example.com", "public_url"),
        ("MAINLOOP_DATABASE_URL", "mysql://x", "database_url"),
        (
            "MAINLOOP_AUTH__SESSION_TTL_HOURS",
            "0",
            "auth.session_ttl_hours",
        ),
    ];
    for (var, value, key) in cases {
        let err = expect_err(Config::load_from(None, &fx.env(&[(var, value)])))?;
        assert!(
            matches!(&err, ConfigError::Invalid { key: k, .. } if k == key),
            "{var}={value}: {err:?}"
        );
        assert!(err.to_string().contains(key), "{err}");
    }
    Ok(())
}

#[test]
fn data_dir_override() -> TestResult {
    let fx = Fixture::new()?;
    let other = fx.data_dir().join("elsewhere");
    let other_str = other.to_string_lossy().into_owned();

    let config = Config::load_from(None, &fx.env(&[]))?;
    assert_eq!(config.data_dir, fx.data_dir());

    // the file can move it...
    let file = fx.write("f.toml", &format!("data_dir = {other_str:?}\n"))?;
    let config = Config::load_from(Some(&file), &[])?;
    assert_eq!(config.data_dir, other);
    assert_eq!(
        config.database_url(),
        format!("sqlite://{other_str}/mainloop.db")
    );

    // ...and MAINLOOP_DATA_DIR beats the file.
    let config = Config::load_from(Some(&file), &fx.env(&[]))?;
    assert_eq!(config.data_dir, fx.data_dir());
    Ok(())
}

const PLANTED_KEY: &str = "sk-ant-PLANTED-0123456789";
const PLANTED_PASSWORD: &str = "pw-PLANTED-9876";

fn config_with_secrets(fx: &Fixture) -> Result<Config, ConfigError> {
    let db = format!("postgres://mainloop:{PLANTED_PASSWORD}@db.internal:5432/mainloop");
    Config::load_from(
        None,
        &fx.env(&[("ANTHROPIC_API_KEY", PLANTED_KEY), ("DATABASE_URL", &db)]),
    )
}

#[test]
fn debug_does_not_reveal_secrets() -> TestResult {
    let fx = Fixture::new()?;
    let config = config_with_secrets(&fx)?;
    for rendered in [format!("{config:?}"), format!("{config:#?}")] {
        assert!(!rendered.contains(PLANTED_KEY), "{rendered}");
        assert!(!rendered.contains(PLANTED_PASSWORD), "{rendered}");
        assert!(rendered.contains("[redacted]"), "{rendered}");
    }
    // ...while the plain values remain usable.
    assert!(config.database_url().contains(PLANTED_PASSWORD));
    assert_eq!(
        config.model.api_key.as_ref().map(|k| k.expose()),
        Some(PLANTED_KEY)
    );
    Ok(())
}

#[test]
fn redacted_toml_hides_secrets_but_shows_the_rest() -> TestResult {
    let fx = Fixture::new()?;
    let config = config_with_secrets(&fx)?;
    let rendered = config.redacted_toml()?;
    assert!(!rendered.contains(PLANTED_KEY), "{rendered}");
    assert!(!rendered.contains(PLANTED_PASSWORD), "{rendered}");
    assert!(
        rendered.contains("postgres://mainloop:[redacted]@db.internal:5432/mainloop"),
        "{rendered}"
    );
    assert!(rendered.contains("api_key = \"[redacted]\""), "{rendered}");
    assert!(rendered.contains("claude-sonnet-4-5"), "{rendered}");
    Ok(())
}

#[test]
fn redacted_toml_of_defaults_is_loadable_and_shows_the_effective_database() -> TestResult {
    let fx = Fixture::new()?;
    let config = Config::load_from(None, &fx.env(&[]))?;
    let rendered = config.redacted_toml()?;
    assert!(
        rendered.contains(&format!("sqlite://{}/mainloop.db", fx.data_dir().display())),
        "{rendered}"
    );
    // Without secrets, print-config output is itself a valid config file.
    let file = fx.write("printed.toml", &rendered)?;
    let reloaded = Config::load_from(Some(&file), &[])?;
    assert_eq!(reloaded.database_url(), config.database_url());
    assert_eq!(reloaded.model, config.model);
    assert_eq!(reloaded.data_dir, config.data_dir);
    Ok(())
}

#[test]
fn example_toml_equals_the_defaults() -> TestResult {
    let fx = Fixture::new()?;
    let file = fx.write("example.toml", EXAMPLE_TOML)?;
    let config = Config::load_from(Some(&file), &fx.env(&[]))?;
    assert_eq!(config, Config::defaults_in(fx.data_dir().to_path_buf()));
    Ok(())
}

/// Commented-out settings look like `# key = value`; prose never has `word = ` at its start.
fn uncomment_settings(text: &str) -> String {
    text.lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("# ") else {
                return line.to_owned();
            };
            let is_setting = rest.split_once(" = ").is_some_and(|(key, _)| {
                !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
            if is_setting {
                rest.to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_toml_documents_every_key() -> TestResult {
    let fx = Fixture::new()?;
    let full = uncomment_settings(EXAMPLE_TOML);
    // The commented-out keys are real keys (unknown keys would fail to load)...
    let file = fx.write("full.toml", &full)?;
    let config = Config::load_from(Some(&file), &[])?;
    assert!(config.model.api_key.is_some());
    assert!(config.database_url.is_some());
    assert!(config.public_url.is_some());

    // ...and every key of a fully populated config appears in the example.
    let documented: toml::Table = full.parse()?;
    let all_keys: toml::Table = config.redacted_toml()?.parse()?;
    for (section, value) in &all_keys {
        let Some(doc) = documented.get(section) else {
            return Err(format!("EXAMPLE_TOML lacks `{section}`").into());
        };
        if let (Some(table), Some(doc_table)) = (value.as_table(), doc.as_table()) {
            for key in table.keys() {
                assert!(
                    doc_table.contains_key(key),
                    "EXAMPLE_TOML lacks `{section}.{key}`"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn model_configured_needs_provider_and_key() -> TestResult {
    let fx = Fixture::new()?;
    let with_key = Config::load_from(None, &fx.env(&[("ANTHROPIC_API_KEY", "k")]))?;
    assert!(with_key.model_configured());
    let no_provider = Config::load_from(
        None,
        &fx.env(&[
            ("ANTHROPIC_API_KEY", "k"),
            ("MAINLOOP_MODEL__PROVIDER", "none"),
        ]),
    )?;
    assert!(!no_provider.model_configured());
    let claude_code = Config::load_from(
        None,
        &fx.env(&[
            ("ANTHROPIC_API_KEY", "k"),
            ("MAINLOOP_MODEL__PROVIDER", "claude-code"),
        ]),
    )?;
    assert_eq!(
        claude_code.model.provider,
        Some(ModelProviderKind::ClaudeCode)
    );
    assert!(!claude_code.model_configured());
    let bad = Config::load_from(None, &fx.env(&[("MAINLOOP_MODEL__PROVIDER", "claude")]));
    assert!(bad.is_err(), "an unknown provider is refused: {bad:?}");
    Ok(())
}

#[test]
fn github_token_and_api_url_come_from_the_conventional_variables_and_stay_secret() -> TestResult {
    let fx = Fixture::new()?;
    let env = fx.env(&[
        ("GITHUB_TOKEN", "ghp_planted_secret_4242"),
        ("GITHUB_API_URL", "https://ghe.example/api/v3"),
        ("MAINLOOP_GITHUB__WEBHOOK_SECRET", "hook-secret-777"),
    ]);
    let config = Config::load_from(None, &env)?;
    assert_eq!(
        config.github.token.as_ref().map(|k| k.expose()),
        Some("ghp_planted_secret_4242")
    );
    assert_eq!(config.github.api_url, "https://ghe.example/api/v3");
    let shown = format!("{config:?}");
    assert!(!shown.contains("ghp_planted_secret_4242"), "{shown}");
    assert!(!shown.contains("hook-secret-777"), "{shown}");
    let env = fx.env(&[("MAINLOOP_GITHUB__GIT_URL", "https://github.com/x.git")]);
    let err = expect_err(Config::load_from(None, &env))?;
    assert!(err.to_string().contains("github.git_url"), "{err}");
    Ok(())
}

#[test]
fn sandbox_mode_and_paths() -> TestResult {
    let fx = Fixture::new()?;
    let config = Config::load_from(None, &fx.env(&[]))?;
    assert_eq!(config.workers.sandbox, SandboxMode::Auto);
    let file = fx.write(
        "m.toml",
        "[workers]\nsandbox = \"bubblewrap\"\nsandbox_read_only = \"~/.rustup, /opt/sdk,,\"\n",
    )?;
    let config = Config::load_from(
        Some(&file),
        &fx.env(&[("MAINLOOP_WORKERS__SANDBOX_READ_WRITE", "/cache")]),
    )?;
    assert_eq!(config.workers.sandbox, SandboxMode::Bubblewrap);
    assert_eq!(
        config
            .workers
            .sandbox_read_only_paths(Some(Path::new("/home/u"))),
        [PathBuf::from("/home/u/.rustup"), PathBuf::from("/opt/sdk")]
    );
    assert_eq!(
        config.workers.sandbox_read_only_paths(None),
        [PathBuf::from("/opt/sdk")]
    );
    assert_eq!(
        config.workers.sandbox_read_write_paths(None),
        [PathBuf::from("/cache")]
    );
    let config = Config::load_from(None, &fx.env(&[("MAINLOOP_WORKERS__SANDBOX", "off")]))?;
    assert_eq!(config.workers.sandbox, SandboxMode::Off);
    let file = fx.write("bad.toml", "[workers]\nsandbox = \"docker\"\n")?;
    let err = expect_err(Config::load_from(Some(&file), &fx.env(&[])))?;
    assert!(err.to_string().contains("sandbox"), "{err}");
    Ok(())
}

#[test]
fn agents_are_built_in_and_a_file_overrides_or_extends_them() -> TestResult {
    let fx = Fixture::new()?;
    let defaults = Config::load_from(None, &fx.env(&[]))?;
    let names: Vec<String> = defaults.agents().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["claude", "codex", "gemini", "opencode"]);
    assert_eq!(defaults.workers.default_agent, "claude");
    let gemini = defaults.agents().into_iter().find(|a| a.name == "gemini");
    assert_eq!(
        gemini.map(|a| (a.protocol, a.command)),
        Some((
            AgentProtocol::Acp,
            vec!["gemini".to_owned(), "--acp".to_owned()]
        ))
    );

    let file = fx.write(
        "agents.toml",
        r#"
[workers]
claude_command = "/opt/claude/bin/claude --verbose"
default_agent = "qwen"

[agents.codex]
max_concurrent = 1

[agents.qwen]
protocol = "acp"
command = ["qwen", "--acp"]
pass_env = ["DASHSCOPE_API_KEY"]
max_concurrent = 2
"#,
    )?;
    let config = Config::load_from(Some(&file), &fx.env(&[]))?;
    let by_name = |n: &str| config.agents().into_iter().find(|a| a.name == n);
    assert_eq!(
        by_name("claude").map(|a| a.command),
        Some(vec![
            "/opt/claude/bin/claude".to_owned(),
            "--verbose".to_owned()
        ])
    );
    let codex = by_name("codex").ok_or("codex")?;
    assert_eq!(codex.max_concurrent, Some(1));
    assert_eq!(
        codex.command,
        ["codex", "app-server"],
        "unset fields stay built in"
    );
    let qwen = by_name("qwen").ok_or("qwen")?;
    assert_eq!(qwen.protocol, AgentProtocol::Acp);
    assert_eq!(qwen.pass_env, ["DASHSCOPE_API_KEY"]);
    assert_eq!(config.workers.default_agent, "qwen");

    let env = Config::load_from(
        Some(&file),
        &fx.env(&[
            ("MAINLOOP_WORKERS__DEFAULT_AGENT", "codex"),
            ("MAINLOOP_AGENTS__CODEX__MAX_CONCURRENT", "4"),
        ]),
    )?;
    assert_eq!(env.workers.default_agent, "codex");
    assert_eq!(
        env.agents()
            .into_iter()
            .find(|a| a.name == "codex")
            .and_then(|a| a.max_concurrent),
        Some(4)
    );
    Ok(())
}

#[test]
fn hostile_agent_tables_are_clear_errors() -> TestResult {
    let fx = Fixture::new()?;
    let cases = [
        (
            "[agents.x]\nprotocol = \"telnet\"\ncommand = [\"x\"]",
            "agents.x.protocol",
        ),
        (
            "[agents.x]\nprotocol = \"acp\"\ncommand = []",
            "empty command",
        ),
        (
            "[agents.x]\nprotocol = \"acp\"\ncommand = [\" \"]",
            "empty program",
        ),
        ("[agents.x]\ncommand = [\"x\"]", "needs a protocol"),
        ("[agents.x]\nprotocol = \"acp\"", "needs a command"),
        (
            "[agents.\"Bad Name\"]\nprotocol = \"acp\"\ncommand = [\"x\"]",
            "not an agent name",
        ),
        (
            "[agents.x]\nprotocol = \"acp\"\ncommand = [\"x\"]\nmax_concurrent = 0",
            "greater than 0",
        ),
        (
            "[agents.x]\nprotocol = \"acp\"\ncommand = [\"x\"]\npass_env = [\"A=B\"]",
            "pass_env",
        ),
        (
            "[agents.x]\nprotocol = \"acp\"\ncommand = [\"x\"]\nenv = { \"A B\" = \"1\" }",
            "env sets",
        ),
        (
            "[agents.x]\nprotocol = \"acp\"\ncommand = [\"x\"]\nshell = true",
            "agents.x.shell",
        ),
        (
            "[agents.codex]\ncommand = \"codex app-server\"",
            "agents.codex.command",
        ),
        (
            "[workers]\ndefault_agent = \"nobody\"",
            "workers.default_agent",
        ),
    ];
    for (i, (toml, expected)) in cases.iter().enumerate() {
        let file = fx.write(&format!("hostile-{i}.toml"), toml)?;
        let err = expect_err(Config::load_from(Some(&file), &fx.env(&[])))?.to_string();
        assert!(
            err.contains(expected),
            "{toml}\n→ {err}\n(expected {expected:?})"
        );
    }
    let err = expect_err(Config::load_from(
        None,
        &fx.env(&[("MAINLOOP_WORKERS__DEFAULT_AGENT", "gpt")]),
    ))?;
    assert!(
        err.to_string().contains("claude, codex, gemini, opencode"),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_default_time_zone_is_an_iana_name() -> TestResult {
    let fx = Fixture::new()?;
    let config = Config::load_from(
        None,
        &fx.env(&[("MAINLOOP_CHAT__TIME_ZONE", "Europe/Paris")]),
    )?;
    assert_eq!(config.chat.time_zone, "Europe/Paris");
    assert_eq!(config.chat.memory_budget_tokens, 3000);
    for bad in ["Mars/Olympus", "../../etc/passwd", "UTC+99"] {
        let err = expect_err(Config::load_from(
            None,
            &fx.env(&[("MAINLOOP_CHAT__TIME_ZONE", bad)]),
        ))?;
        assert!(err.to_string().contains("chat.time_zone"), "{err}");
    }
    Ok(())
}
