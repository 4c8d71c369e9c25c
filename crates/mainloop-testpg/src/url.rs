//! Minimal surgery on postgres URLs: swap the database name, hide the password in messages.
//!
//! Hand-rolled rather than pulling in a URL crate because we only ever touch the path and
//! the userinfo of URLs whose shape libpq/sqlx already define.

use crate::TestPgError;

/// Splits `scheme://authority/path?query` into (`scheme://`, authority, `?query` or "").
fn split(url: &str) -> Option<(&str, &str, &str)> {
    let scheme_end = url.find("://")? + 3;
    let scheme = &url[..scheme_end];
    if !matches!(scheme, "postgres://" | "postgresql://") {
        return None;
    }
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let after = &rest[authority_end..];
    let query = after.find('?').map_or("", |i| &after[i..]);
    Some((scheme, &rest[..authority_end], query))
}

/// The same server and credentials, but database `db`.
pub(crate) fn with_database(url: &str, db: &str) -> Result<String, TestPgError> {
    let (scheme, authority, query) = split(url).ok_or_else(|| TestPgError::BadUrl {
        url: redact(url),
        reason: "expected postgres://user:password@host:port/database",
    })?;
    if authority.is_empty() {
        return Err(TestPgError::BadUrl {
            url: redact(url),
            reason: "no host given",
        });
    }
    Ok(format!("{scheme}{authority}/{db}{query}"))
}

/// The database a URL names.
pub(crate) fn database(url: &str) -> Result<String, TestPgError> {
    let bad = |reason| TestPgError::BadUrl {
        url: redact(url),
        reason,
    };
    let (scheme, authority, query) =
        split(url).ok_or_else(|| bad("expected postgres://…/database"))?;
    let path = &url[scheme.len() + authority.len()..url.len() - query.len()];
    let db = path.trim_start_matches('/');
    // Our own databases are plain identifiers; anything else would need quoting rules.
    if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad("the database name must be a plain identifier"));
    }
    Ok(db.to_owned())
}

/// The URL with the password (if any) replaced, so it can appear in errors and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, authority, _)) = split(url) else {
        return "<unparseable URL>".to_owned();
    };
    // The password cannot contain a raw '@' in a valid URL, but be conservative and treat
    // everything up to the last '@' as userinfo.
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    let start = scheme.len() + colon + 1;
    let end = scheme.len() + at;
    format!("{}[redacted]{}", &url[..start], &url[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_database_and_keeps_query() -> Result<(), TestPgError> {
        assert_eq!(
            with_database("postgres://u:p@h:5432/any?sslmode=disable", "x")?,
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgresql://h", "x")?, "postgresql://h/x");
        assert_eq!(
            with_database("postgres://h?a=b", "x")?,
            "postgres://h/x?a=b"
        );
        Ok(())
    }

    #[test]
    fn names_the_database() -> Result<(), TestPgError> {
        assert_eq!(database("postgres://u:p@h:5/db_1?sslmode=disable")?, "db_1");
        assert_eq!(database("postgresql://h/x")?, "x");
        assert!(database("postgres://h").is_err());
        assert!(database("postgres://h/a\"b").is_err());
        Ok(())
    }

    #[test]
    fn rejects_non_postgres_urls() {
        assert!(with_database("mysql://h/db", "x").is_err());
        assert!(with_database("postgres:///db", "x").is_err());
        assert!(with_database("nonsense", "x").is_err());
    }

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact("postgres://user:s3cret@host:5/db"),
            "postgres://user:[redacted]@host:5/db"
        );
        assert_eq!(redact("postgres://user@host/db"), "postgres://user@host/db");
        assert!(!redact("garbage s3cret").contains("s3cret"));
    }
}
