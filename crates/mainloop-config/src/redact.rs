//! Password-only redaction of connection URLs, so `print-config` still shows which database
//! is used without showing how to get into it.

use serde::Serializer;

use crate::{REDACTED, Secret};

/// Query parameters that carry credentials in libpq/sqlx URLs.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

/// `serialize_with` for `Config::database_url`.
pub(crate) fn serialize_url<S: Serializer>(
    url: &Option<Secret>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_str(&redact_url(url.expose())),
        None => serializer.serialize_none(),
    }
}

/// `scheme://user:password@host/db?password=x` → `scheme://user:[redacted]@host/db?password=[redacted]`.
///
/// Anything not shaped like a URL with an authority (e.g. `sqlite:relative.db`) has no
/// userinfo to hide and is returned unchanged, apart from credential query parameters.
pub(crate) fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = redact_userinfo(base);
    if let Some(query) = query {
        out.push('?');
        out.push_str(&redact_query(query));
    }
    out
}

fn redact_userinfo(base: &str) -> String {
    let Some(scheme_end) = base.find("://").map(|i| i + 3) else {
        return base.to_owned();
    };
    let rest = &base[scheme_end..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    // Everything before the last '@' is userinfo, even if a sloppy password contains '@'.
    let Some(at) = authority.rfind('@') else {
        return base.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return base.to_owned();
    };
    format!(
        "{}{REDACTED}{}",
        &base[..scheme_end + colon + 1],
        &base[scheme_end + at..]
    )
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if SECRET_PARAMS.contains(&key.to_ascii_lowercase().as_str()) => {
                format!("{key}={REDACTED}")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact_url("postgres://user:pw@host/db"),
            "postgres://user:[redacted]@host/db"
        );
        assert_eq!(
            redact_url("postgresql://user:p@ss:w@host:5432/db?sslmode=require"),
            "postgresql://user:[redacted]@host:5432/db?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://host/db?user=u&password=pw"),
            "postgres://host/db?user=u&password=[redacted]"
        );
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        for url in [
            "postgres://user@host/db",
            "postgres://host/db",
            "sqlite:///var/lib/mainloop/mainloop.db",
            "sqlite:relative.db",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
