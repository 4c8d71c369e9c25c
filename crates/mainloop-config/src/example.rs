//! `EXAMPLE_TOML`: the documented sample `mainloop.toml`; tests keep it equal to the defaults.

/// A complete, commented `mainloop.toml` listing every key with its default value.
///
/// Keys that are unset by default are shown commented out. Loading this file yields exactly
/// the built-in defaults (a test enforces it, so this text cannot drift from the code).
pub const EXAMPLE_TOML: &str = r#"# mainloop.toml — every setting with its default.
#
# Looked up at: --config PATH, else $MAINLOOP_CONFIG, else <data_dir>/mainloop.toml,
# else ./mainloop.toml. Every key can also be set through the environment as
# MAINLOOP_<KEY>, with nested keys joined by "__" (e.g. MAINLOOP_MODEL__NAME);
# the environment wins over this file. Unknown keys are errors.

# Where mainloop keeps its state (SQLite database, workspaces).
# Default: the per-user data directory (~/.local/share/mainloop on Linux).
# data_dir = "/home/you/.local/share/mainloop"

# Address the HTTP server listens on. Keep it on localhost unless a TLS proxy is in front.
listen = "127.0.0.1:8080"

# Database URL; also read from $DATABASE_URL. Default: sqlite://<data_dir>/mainloop.db
# database_url = "postgres://mainloop:password@localhost:5432/mainloop"

# Externally reachable base URL, used for links in notifications. Default: unset.
# public_url = "https://mainloop.example.com"

[database]
# Connections kept open while idle (PostgreSQL); more open when work needs them and
# close again once idle.
min_connections = 1
# The most connections open at once.
max_connections = 16

[kubernetes]
# With workers.runtime = "kubernetes": each agent run is a Job in its task's namespace
# (mainloop-task-<task id>), running the agent image as `mainloop runner --once`.
# image = "registry.example.com/mainloop-agent:0.1.0"
# server_url = "http://mainloop.mainloop.svc"   # as the pods reach the server
# server_namespace = "mainloop"
# server_port = 8080
# egress = ["203.0.113.0/24:443"]               # the model APIs, the forge (CIDRs)
# kubeconfig = "/etc/mainloop/kubeconfig"       # default: in-cluster, else $KUBECONFIG
# image_pull_policy = "IfNotPresent"
namespace_prefix = "mainloop-task-"
job_ttl_secs = 3600
# Each agent container's requests and limits, and each task namespace's quota
# (empty: the launcher's, these; the quota holds a run, the one stopping before it and
# the task's database).
# requests = { cpu = "500m", memory = "1Gi", ephemeral-storage = "2Gi" }
# limits = { cpu = "2", memory = "4Gi", ephemeral-storage = "10Gi" }
# quota = { pods = "3", "requests.cpu" = "1100m", "requests.memory" = "2560Mi", "requests.ephemeral-storage" = "4608Mi", "limits.cpu" = "5", "limits.memory" = "9Gi", "limits.ephemeral-storage" = "21Gi" }

[kubernetes.database]
# Where the cluster runs CloudNativePG, a task that asks for a database gets a Cluster of
# one instance in its namespace, deleted with it (elsewhere: workers.task_database_url).
storage_size = "1Gi"
# The operator's namespace: its pods may reach the database's.
operator_namespace = "cnpg-system"
# storage_class = "fast-ssd"                       # default: the cluster's default class
# image = "ghcr.io/cloudnative-pg/postgresql:17"   # default: the operator's
# The database container's requests and limits (empty: the launcher's, these).
# requests = { cpu = "100m", memory = "512Mi", ephemeral-storage = "512Mi" }
# limits = { cpu = "1", memory = "1Gi", ephemeral-storage = "1Gi" }

[auth]
# Require login. Only disable on a single-user machine with a localhost listener.
enabled = true
# Session lifetime in hours (720 = 30 days).
session_ttl_hours = 720

[model]
# What answers the chat: "anthropic" (the API, with api_key), "claude-code" (your own
# `claude` login, with mainloop's tools over MCP), or "none". Unset: "anthropic" when an
# API key is set, else "claude-code" when `claude` is found.
# provider = "claude-code"
# --model for the claude-code main thread (default: Claude Code's own).
# claude_code_model = "sonnet"
# API key; also read from $ANTHROPIC_API_KEY. Prefer the environment over this file.
# api_key = "sk-ant-..."
# Messages API base URL; also read from $ANTHROPIC_BASE_URL.
base_url = "https://api.anthropic.com"
# Model name.
name = "claude-sonnet-4-5"
# Maximum tokens per reply.
max_tokens = 4096
# Conversation history sent per request, in tokens.
context_budget_tokens = 60000
# Give up on a model request after this many seconds.
request_timeout_secs = 300

[dispatcher]
# Jobs running at once.
concurrency = 4
# Seconds a claimed job stays owned without renewal before another runner may take it.
lease_secs = 60
# Failures before a job is given up.
max_attempts = 8
# First retry delay in milliseconds; doubles per attempt up to backoff_max_ms.
backoff_base_ms = 500
backoff_max_ms = 60000

[workers]
# Agents running at once; more tasks queue. Tasks waiting for you hold no slot.
max_agents = 3
# Where agents run: "local" (here and on your runners) or "kubernetes" (see [kubernetes]).
runtime = "local"
# The agent tasks run unless they or their project (its "agent" setting) choose another.
default_agent = "claude"
# The Claude Code command (program and leading arguments).
claude_command = "claude"
# Model for workers; unset means the agent's default.
# model = "claude-opus-4-1"
# Seconds a waiting agent keeps its process before it is stopped (and later resumed).
idle_timeout_secs = 600
# Seconds without output before a running agent is stopped and the task fails.
inactivity_timeout_secs = 1800
# Resumes of a run whose agent gave up on a failing model API (overloaded, 5xx) before
# the task fails, and the seconds before the first (each later one waits twice as long).
api_retries = 5
api_retry_delay_secs = 30
# "Checks failed, fix them" rounds before the task fails.
max_check_rounds = 3
# Seconds the project's check command may run.
check_timeout_secs = 1800
# Accept file:// repository URLs (local paths always work).
allow_file_urls = false
# Directories local repositories must lie in, comma-separated ("~/src"); empty: anywhere.
repo_roots = ""
# This machine's runner labels, comma-separated ("gpu, linux-x64"): tasks requiring labels
# run here only when it has them all, else on a runner that does.
labels = ""
# Seconds a run on a runner that dropped waits for it to come back before moving elsewhere.
runner_reconnect_secs = 60
# Confine agents and check commands: "auto" (bubblewrap when installed and usable),
# "bubblewrap" (required) or "off". A sandboxed agent sees the system read-only, its
# task's worktree and a private home; not mainloop's data, your home or other tasks.
sandbox = "auto"
# Extra paths sandboxed agents may read / write, comma-separated ("~/.rustup").
sandbox_read_only = ""
sandbox_read_write = ""
# Ports handed to tasks whose .mainloop.toml asks for some (PORT, PORT_1, ...).
port_range = "20000-29999"
# Admin URL of a PostgreSQL server where a task declaring database = "postgres" gets
# its own database (DATABASE_URL); unset: mainloop runs its own cluster in
# <data_dir>/task-postgres (needs PostgreSQL's initdb, pg_ctl and postgres installed).
# task_database_url = "postgres://mainloop:password@localhost:5432/postgres"
# How long finished tasks keep their worktree, private home, ports and database (the
# branch always stays): merged tasks in hours (0: at once), failed and cancelled in days.
retention_merged_hours = 0
retention_failed_days = 7
retention_cancelled_days = 7

[previews]
# Preview hosts are t-<task short id>.DOMAIN on mainloop's port. Browsers resolve
# *.localhost to this machine; elsewhere name your domain and add a wildcard DNS record.
domain = "localhost"
# Seconds without a request before a preview is stopped.
idle_timeout_secs = 1800
# Seconds a preview may take to answer on its port.
start_timeout_secs = 120

[chat]
# Tokens of notes and decisions in every main-thread context; older ones fold out.
notes_budget_tokens = 2000
# Tokens of day, week and month digests in every main-thread context; oldest go first.
memory_budget_tokens = 3000
# Whose midnights end a day's digest, for users who have not set their own time zone.
time_zone = "UTC"

[limits]
# Largest accepted request body in bytes (1 MiB).
max_body_bytes = 1048576
# Longest accepted chat message in characters.
max_chat_chars = 100000

[log]
# tracing env-filter syntax, e.g. "info,mainloop=debug".
filter = "info"
# JSON lines instead of human-readable text.
json = false

[notifications]
# Contact URI (mailto: or https:) sent to push services with every Web Push.
vapid_subject = "https://github.com/mainloop-dev/mainloop"

[github]
# Token for issues, pull requests, contents, checks and Actions logs; also read from
# $GITHUB_TOKEN. Prefer the environment over this file.
# token = "github_pat_..."
# REST API base; also read from $GITHUB_API_URL. Enterprise: "https://HOST/api/v3".
api_url = "https://api.github.com"
# The web host in repository URLs (https://HOST/owner/name).
web_host = "github.com"
# Clone and push URL; {owner} and {name} are filled in. The token is never put in it.
git_url = "https://github.com/{owner}/{name}.git"
# Secret for webhook deliveries (X-Hub-Signature-256); unset: polling only.
# webhook_secret = "..."
# Seconds between polls of a watched issue or pull request.
poll_interval_secs = 60
# Seconds CI may stay pending before the task fails.
ci_pending_timeout_secs = 3600
# Seconds to wait for the first check run after a push before reporting "no CI".
ci_appear_timeout_secs = 120
# "CI failed, fix it" rounds before the task fails.
max_ci_rounds = 5
# Seconds one GitHub request may take before it is tried again later.
request_timeout_secs = 60
# Label on plan issues and pull requests.
label = "mainloop"
# Logins (comma-separated) whose replies count, besides the token's own account.
trusted_users = ""

[agents]
# Coding agents tasks may run, by name. Built in: claude (protocol "claude-code",
# command from workers.claude_command), codex ("codex-app-server",
# ["codex", "app-server"]), gemini ("acp", ["gemini", "--acp"]) and opencode ("acp",
# ["opencode", "acp"]). A table here changes a built-in's fields or adds an agent:
# protocol ("claude-code", "codex-app-server" or "acp"), command (program and
# arguments), pass_env (environment variables the agent gets from the server's), env
# (variables set for it; opencode's built-in makes it ask before edits and commands)
# and max_concurrent (its runs at once, within workers.max_agents; unset: no cap of its
# own).
# codex = { max_concurrent = 1, pass_env = ["OPENAI_API_KEY"] }
# qwen = { protocol = "acp", command = ["qwen", "--acp"], pass_env = ["DASHSCOPE_API_KEY"] }
"#;
