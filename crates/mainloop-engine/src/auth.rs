//! Credentials: API tokens, browser sessions and one-time sign-in links. Only SHA-256
//! hashes are stored, so a leaked database does not leak usable tokens.

use crate::{Engine, Result, now};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mainloop_domain::records::User;
use mainloop_domain::{Timestamp, UserId};
use mainloop_store::TokenKind;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Prefix of API tokens, so they are recognisable in secret scanners.
pub const API_TOKEN_PREFIX: &str = "mlt_";
const SESSION_PREFIX: &str = "mls_";
const LINK_PREFIX: &str = "mll_";
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A new random token with `prefix`: 256 bits from the OS generator.
pub(crate) fn new_token(prefix: &str) -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a token.
#[must_use]
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Engine {
    /// How long a sign-in link works: long enough to reach for a phone, short enough
    /// that a link left in a terminal's scrollback is dead.
    pub const SIGN_IN_LINK_TTL: Duration = Duration::from_secs(10 * 60);

    /// Creates the owner and their first API token if there is no owner yet. Returns the
    /// token only when it was created now (it is shown once).
    ///
    /// # Errors
    /// On storage failure.
    pub async fn ensure_owner(&self, name: &str) -> Result<(User, Option<String>)> {
        if let Some(owner) = self.store().owner().await? {
            return Ok((owner, None));
        }
        let (user, token) = self.create_user(name, true).await?;
        Ok((user, Some(token)))
    }

    /// Creates a user with a fresh API token.
    ///
    /// # Errors
    /// Conflict when the name is taken; invalid names.
    pub async fn create_user(&self, name: &str, is_owner: bool) -> Result<(User, String)> {
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(crate::EngineError::Invalid(
                "a user name is 1-64 characters of letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let token = new_token(API_TOKEN_PREFIX);
        let now = now();
        let mut tx = self.store().begin().await?;
        let user = tx.create_user(name, is_owner, now).await?;
        tx.insert_token(&hash_token(&token), user.id, TokenKind::Api, None, now)
            .await?;
        tx.commit().await?;
        Ok((user, token))
    }

    /// Issues another API token for an existing user.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn issue_api_token(&self, user: &User) -> Result<String> {
        let token = new_token(API_TOKEN_PREFIX);
        let mut tx = self.store().begin().await?;
        tx.insert_token(&hash_token(&token), user.id, TokenKind::Api, None, now())
            .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// The user an API token belongs to (or a main-thread session's credential, which
    /// lives in this process only).
    ///
    /// # Errors
    /// On storage failure.
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<User>> {
        if let Some(user) = self.main_thread_user(token) {
            return Ok(self.store().user(user).await?);
        }
        Ok(self
            .store()
            .user_for_token(&hash_token(token), TokenKind::Api, now())
            .await?)
    }

    /// Exchanges an API token for a browser session: `(user, session token, expiry)`.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn login(&self, token: &str) -> Result<Option<(User, String, Timestamp)>> {
        let Some(user) = self.authenticate_token(token).await? else {
            return Ok(None);
        };
        let mut tx = self.store().begin().await?;
        let (session, expires) = self.open_session(&mut tx, user.id).await?;
        tx.commit().await?;
        Ok(Some((user, session, expires)))
    }

    async fn open_session(
        &self,
        tx: &mut mainloop_store::Tx,
        user: UserId,
    ) -> Result<(String, Timestamp)> {
        let session = new_token(SESSION_PREFIX);
        let now = now();
        let expires = now.plus_millis(millis(self.config().session_ttl));
        tx.insert_token(
            &hash_token(&session),
            user,
            TokenKind::Session,
            Some(expires),
            now,
        )
        .await?;
        Ok((session, expires))
    }

    /// Issues a one-time sign-in code for `user`, working for `ttl`. The caller shows it
    /// once (as a link); only its hash is kept.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn issue_sign_in_code(&self, user: &User, ttl: Duration) -> Result<String> {
        let code = new_token(LINK_PREFIX);
        let now = now();
        let mut tx = self.store().begin().await?;
        tx.insert_token(
            &hash_token(&code),
            user.id,
            TokenKind::Link,
            Some(now.plus_millis(millis(ttl))),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(code)
    }

    /// Exchanges a sign-in code for a browser session, spending the code in the same
    /// transaction that opens the session. `None` when the code is wrong, used or
    /// expired.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn sign_in_with_code(&self, code: &str) -> Result<Option<(User, String, Timestamp)>> {
        let mut tx = self.store().begin().await?;
        let Some(user_id) = tx
            .take_token(&hash_token(code), TokenKind::Link, now())
            .await?
        else {
            return Ok(None);
        };
        let (session, expires) = self.open_session(&mut tx, user_id).await?;
        tx.commit().await?;
        // Users are never deleted, so this finds them; if not, the session is useless.
        Ok(self
            .store()
            .user(user_id)
            .await?
            .map(|user| (user, session, expires)))
    }

    /// The user a session belongs to, if it has not expired.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn authenticate_session(&self, session: &str) -> Result<Option<User>> {
        Ok(self
            .store()
            .user_for_token(&hash_token(session), TokenKind::Session, now())
            .await?)
    }

    /// Ends a session.
    ///
    /// # Errors
    /// On storage failure.
    pub async fn logout(&self, session: &str) -> Result<()> {
        self.store().delete_token(&hash_token(session)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let a = new_token(API_TOKEN_PREFIX);
        let b = new_token(API_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with(API_TOKEN_PREFIX));
        assert_eq!(a.len(), 4 + 43);
        assert_eq!(hash_token(&a).len(), 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }
}
