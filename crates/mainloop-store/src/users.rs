//! Users and their credentials (only token hashes are stored).

use crate::{Result, Store, StoreError, Tx, from_bool, parse, to_bool};
use mainloop_domain::records::User;
use mainloop_domain::{Timestamp, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

/// What a token grants: an API token (long-lived, for clients), a browser session, or a
/// one-time sign-in link (short-lived, exchanged for a session once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Api,
    Session,
    Link,
}

impl TokenKind {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Session => "session",
            Self::Link => "link",
        }
    }
}

const USER_COLS: &str = "id, name, is_owner, created_at";

fn user_from_row(row: &AnyRow) -> Result<User> {
    Ok(User {
        id: parse(&row.try_get::<String, _>("id")?, "user id")?,
        name: row.try_get("name")?,
        is_owner: to_bool(row.try_get("is_owner")?),
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
    })
}

impl Tx {
    /// Creates a user.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the name is taken.
    pub async fn create_user(
        &mut self,
        name: &str,
        is_owner: bool,
        now: Timestamp,
    ) -> Result<User> {
        let user = User {
            id: UserId::new_v7(now),
            name: name.to_owned(),
            is_owner,
            created_at: now,
        };
        sqlx::query("INSERT INTO users (id, name, is_owner, created_at) VALUES ($1, $2, $3, $4)")
            .bind(user.id.to_string())
            .bind(&user.name)
            .bind(from_bool(is_owner))
            .bind(now.as_millis())
            .execute(self.conn())
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("user '{name}' exists")),
                other => other,
            })?;
        Ok(user)
    }

    /// Stores the hash of a new token.
    ///
    /// # Errors
    /// On database failure.
    pub async fn insert_token(
        &mut self,
        token_hash: &str,
        user: UserId,
        kind: TokenKind,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO auth_tokens (token_hash, user_id, kind, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user.to_string())
        .bind(kind.as_str())
        .bind(now.as_millis())
        .bind(expires_at.map(Timestamp::as_millis))
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Deletes a token of `kind` that has not expired and returns whose it was: a
    /// single-use credential is spent by the first transaction that takes it, however
    /// many race for it.
    ///
    /// # Errors
    /// On database failure.
    pub async fn take_token(
        &mut self,
        token_hash: &str,
        kind: TokenKind,
        now: Timestamp,
    ) -> Result<Option<UserId>> {
        let row = sqlx::query(
            "DELETE FROM auth_tokens WHERE token_hash = $1 AND kind = $2 \
             AND (expires_at IS NULL OR expires_at > $3) RETURNING user_id",
        )
        .bind(token_hash)
        .bind(kind.as_str())
        .bind(now.as_millis())
        .fetch_optional(self.conn())
        .await?;
        row.map(|r| parse(&r.try_get::<String, _>("user_id")?, "user id"))
            .transpose()
    }
}

impl Store {
    /// The user with this name.
    ///
    /// # Errors
    /// On database failure.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The user with this id.
    ///
    /// # Errors
    /// On database failure.
    pub async fn user(&self, id: UserId) -> Result<Option<User>> {
        let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The owner, created at first start.
    ///
    /// # Errors
    /// On database failure.
    pub async fn owner(&self) -> Result<Option<User>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users WHERE is_owner = 1 ORDER BY created_at LIMIT 1"
        ))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Every user, oldest first.
    ///
    /// # Errors
    /// On database failure.
    pub async fn users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// The user a token hash belongs to, if the token exists, is of `kind` and has not
    /// expired.
    ///
    /// # Errors
    /// On database failure.
    pub async fn user_for_token(
        &self,
        token_hash: &str,
        kind: TokenKind,
        now: Timestamp,
    ) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT u.id, u.name, u.is_owner, u.created_at FROM auth_tokens t \
             JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND t.kind = $2 AND (t.expires_at IS NULL OR t.expires_at > $3)",
        )
        .bind(token_hash)
        .bind(kind.as_str())
        .bind(now.as_millis())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Forgets a token (logout, rotation).
    ///
    /// # Errors
    /// On database failure.
    pub async fn delete_token(&self, token_hash: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM auth_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(tx.conn())
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Removes expired session tokens.
    ///
    /// # Errors
    /// On database failure.
    pub async fn purge_expired_tokens(&self, now: Timestamp) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "DELETE FROM auth_tokens WHERE expires_at IS NOT NULL AND expires_at <= $1",
        )
        .bind(now.as_millis())
        .execute(tx.conn())
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
