//! The environment spec: every key read, defaults, overrides, and every hostile value
//! refused with its key named.

use super::*;
use serde_json::json;

fn err(v: &Value) -> String {
    EnvSpec::from_value(v).expect_err("refused")
}

#[test]
fn a_full_spec_is_read_and_unknown_keys_are_left_alone() {
    let spec = EnvSpec::from_value(&json!({
        "check": "make test",
        "setup": ["npm ci", "  make gen  ", ""],
        "setup_timeout_secs": 60,
        "copy": [".env", "config/*.local.json", "**/secrets.txt"],
        "env": {"APP_MODE": "test", "_X1": ""},
        "ports": 2,
        "database": "postgres",
        "preview": "npm run dev -- --port $PORT",
    }))
    .unwrap();
    assert_eq!(spec.setup, ["npm ci", "make gen"]);
    assert_eq!(spec.setup_timeout_secs, 60);
    assert_eq!(spec.copy.len(), 3);
    assert_eq!(spec.env["APP_MODE"], "test");
    assert_eq!(spec.ports, 2);
    assert_eq!(spec.database, Some(TaskDatabase::Postgres));
    assert_eq!(spec.preview.as_deref(), Some("npm run dev -- --port $PORT"));
    assert!(!spec.is_empty());
}

#[test]
fn nothing_declared_is_the_default() {
    for v in [json!(null), json!({}), json!({"check": "x"})] {
        let spec = EnvSpec::from_value(&v).unwrap();
        assert_eq!(spec, EnvSpec::default());
        assert!(spec.is_empty());
        assert_eq!(spec.setup_timeout_secs, DEFAULT_SETUP_TIMEOUT_SECS);
    }
    // One command may be given as a string.
    let spec = EnvSpec::from_value(&json!({"setup": "make", "copy": ".env"})).unwrap();
    assert_eq!(spec.setup, ["make"]);
    assert_eq!(spec.copy, [".env"]);
}

#[test]
fn the_projects_settings_win_over_the_file() {
    let file = json!({"setup": ["a"], "ports": 1, "env": {"A": "1"}});
    let settings = json!({"ports": 3, "agent": "codex", "check": "x"});
    let spec = EnvSpec::with_settings(&file, &settings).unwrap();
    assert_eq!(spec.ports, 3);
    assert_eq!(spec.setup, ["a"]);
    assert_eq!(spec.env["A"], "1");
    // A hostile override is refused like a hostile file.
    let e = EnvSpec::with_settings(&file, &json!({"copy": ["../x"]})).unwrap_err();
    assert!(e.contains("`copy`"), "{e}");
    assert!(
        EnvSpec::with_settings(&json!(null), &json!(null))
            .unwrap()
            .is_empty()
    );
    assert!(EnvSpec::with_settings(&json!([1]), &json!({})).is_err());
}

#[test]
fn every_hostile_value_is_refused_naming_its_key() {
    let long = "x".repeat(MAX_COMMAND_CHARS + 1);
    let many_env: serde_json::Map<String, Value> = (0..=MAX_ENV_VARS)
        .map(|i| (format!("V{i}"), json!("x")))
        .collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!([1]), "table"),
        (json!({"setup": 5}), "`setup`"),
        (json!({"setup": [1]}), "`setup`"),
        (json!({"setup": [&long]}), "`setup`"),
        (json!({"setup": ["a\u{0}b"]}), "`setup`"),
        (
            json!({"setup": vec!["x"; MAX_SETUP_COMMANDS + 1]}),
            "`setup`",
        ),
        (json!({"setup_timeout_secs": 0}), "`setup_timeout_secs`"),
        (json!({"setup_timeout_secs": 7201}), "`setup_timeout_secs`"),
        (json!({"setup_timeout_secs": -1}), "`setup_timeout_secs`"),
        (json!({"setup_timeout_secs": "60"}), "`setup_timeout_secs`"),
        (json!({"copy": "/etc/passwd"}), "`copy`"),
        (json!({"copy": ["../outside"]}), "`copy`"),
        (json!({"copy": ["a/../../b"]}), "`copy`"),
        (json!({"copy": ["a/.."]}), "`copy`"),
        (json!({"copy": ["~/.ssh/id_rsa"]}), "`copy`"),
        (json!({"copy": ["..\\x"]}), "`copy`"),
        (json!({"copy": [".git/config"]}), "`copy`"),
        (json!({"copy": ["a\u{0}"]}), "`copy`"),
        (json!({"copy": [""]}), "`copy`"),
        (json!({"copy": [7]}), "`copy`"),
        (json!({"copy": {"a": "b"}}), "`copy`"),
        (json!({"copy": vec!["a"; MAX_COPY_PATTERNS + 1]}), "`copy`"),
        (json!({"env": ["A=1"]}), "`env`"),
        (json!({"env": {"1A": "x"}}), "`env`"),
        (json!({"env": {"A-B": "x"}}), "`env`"),
        (json!({"env": {"": "x"}}), "`env`"),
        (json!({"env": {"PATH": "/evil"}}), "`env`"),
        (json!({"env": {"HOME": "/"}}), "`env`"),
        (json!({"env": {"TMPDIR": "/"}}), "`env`"),
        (json!({"env": {"PORT": "1"}}), "`env`"),
        (json!({"env": {"PORT_3": "1"}}), "`env`"),
        (json!({"env": {"DATABASE_URL": "x"}}), "`env`"),
        (json!({"env": {"MAINLOOP_MCP_TOKEN": "x"}}), "`env`"),
        (json!({"env": {"A": 1}}), "`env`"),
        (json!({"env": {"A": "a\u{0}"}}), "`env.A`"),
        (json!({"env": {"A": &long}}), "`env.A`"),
        (
            Value::Object(serde_json::Map::from_iter([(
                "env".to_owned(),
                Value::Object(many_env),
            )])),
            "`env`",
        ),
        (json!({"ports": 9}), "`ports`"),
        (json!({"ports": 300}), "`ports`"),
        (json!({"ports": -1}), "`ports`"),
        (json!({"ports": 1.5}), "`ports`"),
        (json!({"ports": "2"}), "`ports`"),
        (json!({"database": "mysql"}), "`database`"),
        (json!({"database": true}), "`database`"),
        (json!({"preview": ["npm", "start"]}), "`preview`"),
        (json!({"preview": long}), "`preview`"),
        (json!({"preview": "a\u{0}"}), "`preview`"),
    ];
    for (value, key) in cases {
        let e = err(&value);
        assert!(e.contains(key), "{value}: {e}");
    }
}

#[test]
fn reserved_names_and_port_variables() {
    for name in [
        "PATH",
        "HOME",
        "TMPDIR",
        "PORT",
        "PORT_1",
        "PORT_12",
        "DATABASE_URL",
        "MAINLOOP_X",
    ] {
        assert!(reserved_var(name), "{name}");
    }
    for name in ["PORTS", "PORT_", "PORT_A", "MY_PORT", "DATABASE"] {
        assert!(!reserved_var(name), "{name}");
    }
    assert_eq!(
        port_vars(&[20001, 20002, 20003]),
        [
            ("PORT".to_owned(), "20001".to_owned()),
            ("PORT_1".to_owned(), "20002".to_owned()),
            ("PORT_2".to_owned(), "20003".to_owned()),
        ]
    );
    assert!(port_vars(&[]).is_empty());
}
