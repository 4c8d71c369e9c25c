//! A server whose tasks run one of the other agents (Codex, OpenCode, Gemini CLI), the
//! real pinned CLI against the fake model, configured as a user would: an
//! `[agents.<name>]` table in the configuration file and the agent's own settings.

use super::*;
use crate::faults::{ServerLog, spawn_logged};

/// The agents besides Claude Code that the end-to-end tests drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cli {
    Codex,
    OpenCode,
    Gemini,
}

impl Cli {
    /// The agent's configured name, which is also its program's.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Codex => "codex",
            Self::OpenCode => "opencode",
            Self::Gemini => "gemini",
        }
    }
}

fn repo_root() -> PathBuf {
    std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).unwrap()
}

/// The pinned CLI from `npm ci`, or None (the test skips) when it is missing, except
/// under CI.
pub(crate) fn cli_path(cli: Cli) -> Option<PathBuf> {
    let program = repo_root().join("node_modules/.bin").join(cli.name());
    if program.exists() {
        return Some(std::fs::canonicalize(&program).unwrap());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing",
        program.display()
    );
    eprintln!("skipping: {} is missing (run `npm ci`)", program.display());
    None
}

/// A directory under `target/test-homes`, removed when dropped. Not the temporary
/// directory: Codex refuses to sandbox commands when its home lies under it, and a
/// sandboxed agent's home is inside the server's data directory.
pub(crate) struct TestDir(pub PathBuf);

impl TestDir {
    pub(crate) fn new(what: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = repo_root().join(format!(
            "target/test-homes/e2e-{what}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // A server's log sits beside its data directory.
        let _ = std::fs::remove_file(self.0.with_extension("log"));
    }
}

/// The fake model, a git repository, and the data and settings of servers that run
/// `cli` for every task.
pub(crate) struct AgentWorld {
    pub cli: Cli,
    pub fake: FakeAnthropic,
    pub repo: GitRepo,
    pub data: TestDir,
    etc: TestDir,
    program: PathBuf,
}

impl AgentWorld {
    /// None when the CLI is not installed (outside CI). `script` is the fake model's
    /// YAML script.
    pub(crate) async fn new(cli: Cli, script: &str) -> Option<Self> {
        let program = cli_path(cli)?;
        let fake = FakeAnthropic::start(Script::from_yaml(script).unwrap())
            .await
            .unwrap();
        let world = Self {
            cli,
            fake,
            repo: GitRepo::new(),
            data: TestDir::new(&format!("{}-data", cli.name())),
            etc: TestDir::new(&format!("{}-etc", cli.name())),
            program,
        };
        world.write_config();
        Some(world)
    }

    fn config_file(&self) -> PathBuf {
        self.etc.0.join("mainloop.toml")
    }

    /// The `[agents.<name>]` table and the agent's own settings.
    fn write_config(&self) {
        let program = self.program.display().to_string();
        let (command, pass_env): (Vec<String>, &[&str]) = match self.cli {
            Cli::Codex => {
                let provider = format!(
                    "model_providers.fake={{name=\"Fake\",base_url=\"{}/v1\",\
                     wire_api=\"responses\",env_key=\"FAKE_API_KEY\",\
                     request_max_retries=0,stream_max_retries=0}}",
                    self.fake.base_url()
                );
                let command = [
                    program.as_str(),
                    "-c",
                    "model_provider=fake",
                    "-c",
                    &provider,
                    "-c",
                    "model=gpt-5.5",
                    "app-server",
                ];
                (
                    command.iter().map(|s| (*s).to_owned()).collect(),
                    &["FAKE_API_KEY"],
                )
            }
            Cli::OpenCode => (
                vec![program, "acp".to_owned()],
                &["OPENCODE_DISABLE_MODELS_FETCH"],
            ),
            Cli::Gemini => (
                vec![program, "--acp".to_owned()],
                &["GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"],
            ),
        };
        let toml = format!(
            "[workers]\ndefault_agent = {name:?}\n\n[agents.{name}]\ncommand = {command:?}\n\
             pass_env = {pass_env:?}\n",
            name = self.cli.name(),
        );
        if self.cli == Cli::OpenCode {
            // The provider in the project's own settings, committed to the repository
            // (a file named by OPENCODE_CONFIG would have to lie where a sandboxed agent
            // can read it, and this world may sit under /tmp); the permissions are the
            // built-in entry's, which the journey's permission checks then prove.
            let settings = json!({
                "model": "anthropic/claude-sonnet-4-5",
                "autoupdate": false,
                "share": "disabled",
                "provider": {"anthropic": {"options": {
                    "baseURL": format!("{}/v1", self.fake.base_url()),
                    "apiKey": "sk-ant-fake",
                }}},
            });
            std::fs::write(self.repo.path().join("opencode.json"), settings.to_string()).unwrap();
            self.repo.git(&["add", "opencode.json"]);
            self.repo
                .git(&["commit", "-q", "-m", "OpenCode's provider"]);
        }
        std::fs::write(self.config_file(), toml).unwrap();
    }

    /// The server's command line: its data directory, configuration file, and the
    /// variables the agent's `pass_env` names.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = command(&self.data.0, Some(&self.fake.base_url()));
        cmd.env("MAINLOOP_CONFIG", self.config_file());
        match self.cli {
            Cli::Codex => {
                cmd.env("FAKE_API_KEY", "sk-fake");
            }
            Cli::OpenCode => {
                cmd.env("OPENCODE_DISABLE_MODELS_FETCH", "1");
            }
            Cli::Gemini => {
                cmd.env("GEMINI_API_KEY", "sk-gemini-fake")
                    .env("GOOGLE_GEMINI_BASE_URL", self.fake.base_url());
            }
        }
        cmd
    }

    /// A server on this world's data, its log kept for a failure report.
    pub(crate) fn start(&self) -> (Server, ServerLog) {
        spawn_logged(self.command(), &self.data.0)
    }

    /// The rules the fake model answered with, in order.
    pub(crate) fn rules(&self) -> Vec<String> {
        self.fake
            .message_requests()
            .into_iter()
            .map(|r| r.rule_name.unwrap_or_else(|| "<none>".to_owned()))
            .collect()
    }
}

/// Whether a file somewhere under `dir` has a name `wanted` accepts: an agent's own
/// record of a session.
pub(crate) fn file_under(dir: &Path, wanted: &dyn Fn(&str) -> bool) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            return file_under(&entry.path(), wanted);
        }
        wanted(&entry.file_name().to_string_lossy())
    })
}

/// The task as GET /api/tasks/{id} shows it.
pub(crate) async fn task(base: &str, token: &str, id: &str) -> Value {
    get(base, token, &format!("/api/tasks/{id}")).await
}

/// The body the fake model got with the request it answered with `rule`.
pub(crate) fn request_for(world: &AgentWorld, rule: &str) -> String {
    world
        .fake
        .message_requests()
        .into_iter()
        .find(|r| r.rule_name.as_deref() == Some(rule))
        .unwrap_or_else(|| panic!("no request answered by {rule:?}: {:?}", world.rules()))
        .body
        .to_string()
}

/// Waits until the task is in `state` with `field` holding `text` (a later round of the
/// same state, such as a revised plan).
pub(crate) async fn wait_state_with(
    base: &str,
    token: &str,
    id: &str,
    state: &str,
    field: &str,
    text: &str,
) -> Value {
    wait_for(format!("task {id} in {state} with {text:?}"), || async {
        let t = task(base, token, id).await;
        assert_ne!(t["state"], "failed", "{}", t["error"]);
        (t["state"] == state && t[field].as_str().is_some_and(|f| f.contains(text))).then_some(t)
    })
    .await
}
