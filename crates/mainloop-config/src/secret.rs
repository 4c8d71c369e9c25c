//! `Secret`: a configuration string that never appears in Debug, Display or serialized output.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

/// What every rendering of a secret shows instead of its value.
pub const REDACTED: &str = "[redacted]";

/// A secret string (API key, database URL with password, ...).
///
/// Deserializes from a plain string. `Debug`, `Display` and `Serialize` all produce
/// `[redacted]`, so a secret cannot leak through logging or `print-config`; the value is only
/// reachable through [`Secret::expose`]. Serializing therefore does not round-trip — do not
/// persist a `Config` through serde.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The plain value, for actually using it (connecting, sending a header).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Constant-time, so that comparing a presented credential against a configured one cannot
/// leak it through timing.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose()
            .as_bytes()
            .ct_eq(other.expose().as_bytes())
            .into()
    }
}

impl Eq for Secret {}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_redacted_everywhere() -> Result<(), toml::ser::Error> {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(format!("{secret}"), REDACTED);
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some([redacted])");
        #[derive(Serialize)]
        struct Wrapper {
            key: Secret,
        }
        let rendered = toml::to_string(&Wrapper {
            key: secret.clone(),
        })?;
        assert!(!rendered.contains("hunter2"), "{rendered}");
        assert_eq!(secret.expose(), "hunter2");
        Ok(())
    }

    #[test]
    fn compares_by_value() {
        assert_eq!(Secret::new("a"), Secret::from("a"));
        assert_ne!(Secret::new("a"), Secret::new("ab"));
        assert_ne!(Secret::new("a"), Secret::new("b"));
    }
}
