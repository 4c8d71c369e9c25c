//! VAPID (RFC 8292): the application server proves to a push service who it is with an
//! ES256-signed JWT naming the push service's origin (`aud`), an expiry and a contact.

use crate::PushError;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mainloop_engine::VapidKeys;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::json;

/// Push services refuse tokens valid for more than 24 hours; ours live 12.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 24 * 3600;
const TOKEN_LIFETIME_SECS: i64 = 12 * 3600;

/// The `Authorization` header value for a request to `endpoint`:
/// `vapid t=<jwt>, k=<public key>`. `now_secs` is the current Unix time.
///
/// # Errors
/// A corrupt stored private key; an endpoint without an origin.
pub fn authorization(
    keys: &VapidKeys,
    endpoint: &url::Url,
    subject: &str,
    now_secs: i64,
) -> Result<String, PushError> {
    let origin = endpoint.origin();
    if !origin.is_tuple() {
        return Err(PushError::Endpoint("it has no origin".into()));
    }
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
    let claims = json!({
        "aud": origin.ascii_serialization(),
        "exp": now_secs + TOKEN_LIFETIME_SECS,
        "sub": subject,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let private = URL_SAFE_NO_PAD
        .decode(&keys.private_key)
        .map_err(|_| PushError::Key("the stored VAPID private key is not base64url".into()))?;
    let key = SigningKey::from_slice(&private)
        .map_err(|_| PushError::Key("the stored VAPID private key is not a P-256 scalar".into()))?;
    // ES256 is the fixed-size r‖s form, not DER.
    let signature: Signature = key.sign(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(signature.to_bytes());
    Ok(format!(
        "vapid t={signing_input}.{signature}, k={}",
        keys.public_key
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use p256::elliptic_curve::rand_core::OsRng;
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;

    fn keys() -> VapidKeys {
        let secret = p256::SecretKey::random(&mut OsRng);
        VapidKeys {
            public_key: URL_SAFE_NO_PAD
                .encode(secret.public_key().to_encoded_point(false).as_bytes()),
            private_key: URL_SAFE_NO_PAD.encode(secret.to_bytes()),
        }
    }

    #[test]
    fn tokens_verify_and_name_the_endpoint_origin() {
        let keys = keys();
        let endpoint = url::Url::parse("https://push.example.net:8443/wpush/v2/abc?x=1").unwrap();
        let now = 1_700_000_000;
        let header = authorization(&keys, &endpoint, "mailto:ops@example.com", now).unwrap();
        // The fake push service checks it with its own verifier.
        let claims =
            mainloop_fake_push::verify_vapid(&header, "https://push.example.net:8443", now)
                .unwrap();
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let exp = claims["exp"].as_i64().unwrap();
        assert!(exp > now && exp <= now + MAX_TOKEN_LIFETIME_SECS);
        // Another origin, or a later time, is refused.
        assert!(
            mainloop_fake_push::verify_vapid(&header, "https://push.example.net", now).is_err()
        );
        assert!(
            mainloop_fake_push::verify_vapid(&header, "https://push.example.net:8443", exp + 1)
                .is_err()
        );
    }

    #[test]
    fn a_corrupt_private_key_is_an_error_not_a_panic() {
        let mut keys = keys();
        keys.private_key = "AAAA".into();
        let endpoint = url::Url::parse("https://push.example.net/x").unwrap();
        assert!(matches!(
            authorization(&keys, &endpoint, "mailto:a@b", 0),
            Err(PushError::Key(_))
        ));
    }
}
