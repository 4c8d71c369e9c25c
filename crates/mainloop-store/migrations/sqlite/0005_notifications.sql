-- Web Push and ntfy notifications: the server's VAPID key pair (one row, made on first
-- need), each browser's push subscription, and per-user settings.

CREATE TABLE vapid_keys (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    public_key TEXT NOT NULL,
    private_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE push_subscriptions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    endpoint TEXT NOT NULL UNIQUE,
    p256dh TEXT NOT NULL,
    auth TEXT NOT NULL,
    user_agent TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id, created_at);

CREATE TABLE notification_settings (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    ntfy_url TEXT,
    updated_at INTEGER NOT NULL
);
