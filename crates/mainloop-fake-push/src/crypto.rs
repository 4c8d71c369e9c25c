//! The receiving side's crypto: a subscriber's key pair and auth secret, decryption of
//! an `aes128gcm` Web Push body, and verification of a VAPID `Authorization` header.

use aes_gcm::aead::Aead;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

/// What a browser holds for one subscription.
#[derive(Clone)]
pub struct Subscriber {
    secret: SecretKey,
    pub auth: [u8; 16],
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").finish_non_exhaustive()
    }
}

impl Subscriber {
    #[must_use]
    pub fn generate() -> Self {
        let mut auth = [0_u8; 16];
        OsRng.fill_bytes(&mut auth);
        Self {
            secret: SecretKey::random(&mut OsRng),
            auth,
        }
    }

    /// The 65-byte uncompressed public key (`p256dh`).
    #[must_use]
    pub fn public_key(&self) -> Vec<u8> {
        self.secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// Decrypts a Web Push body (RFC 8291 over RFC 8188 `aes128gcm`).
    ///
    /// # Errors
    /// A malformed header, a wrong key, a tampered body, or bad padding.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        // salt(16) ‖ rs(4) ‖ idlen(1) ‖ keyid(idlen) ‖ records
        if body.len() < 21 {
            return Err("body shorter than the aes128gcm header".into());
        }
        let (salt, rest) = body.split_at(16);
        let (rs, rest) = rest.split_at(4);
        let rs = u32::from_be_bytes([rs[0], rs[1], rs[2], rs[3]]) as usize;
        let (idlen, rest) = rest.split_at(1);
        let idlen = usize::from(idlen[0]);
        if idlen != 65 || rest.len() < idlen {
            return Err(format!(
                "key id must be a 65-byte public key, is {idlen} bytes"
            ));
        }
        let (keyid, ciphertext) = rest.split_at(idlen);
        if ciphertext.len() > rs {
            return Err("more than one record; Web Push messages have one".into());
        }
        let sender = PublicKey::from_sec1_bytes(keyid).map_err(|_| "bad sender key")?;
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), sender.as_affine());
        let ua_public = self.public_key();

        let mut info = Vec::new();
        info.extend_from_slice(b"WebPush: info");
        info.push(0);
        info.extend_from_slice(&ua_public);
        info.extend_from_slice(keyid);
        let mut ikm = [0_u8; 32];
        Hkdf::<Sha256>::new(Some(&self.auth), shared.raw_secret_bytes())
            .expand(&info, &mut ikm)
            .map_err(|_| "hkdf")?;
        let hk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let mut key = [0_u8; 16];
        let mut nonce = [0_u8; 12];
        hk.expand(b"Content-Encoding: aes128gcm\x00", &mut key)
            .map_err(|_| "hkdf")?;
        hk.expand(b"Content-Encoding: nonce\x00", &mut nonce)
            .map_err(|_| "hkdf")?;
        let mut plain = Aes128Gcm::new_from_slice(&key)
            .map_err(|_| "key")?
            .decrypt(Nonce::from_slice(&nonce), ciphertext)
            .map_err(|_| "decryption failed (wrong key or tampered body)")?;
        // Strip padding: trailing zeros, then the last-record delimiter 0x02.
        while plain.last() == Some(&0) {
            plain.pop();
        }
        if plain.pop() != Some(2) {
            return Err("missing the last-record padding delimiter".into());
        }
        Ok(plain)
    }
}

/// Checks `Authorization: vapid t=<jwt>, k=<key>`: an ES256 signature by `k`, `aud`
/// equal to `origin`, `exp` in the future and at most 24 hours away, `sub` present.
/// Returns the claims.
///
/// # Errors
/// What is wrong, for the fake's 401/403 answer.
pub fn verify_vapid(
    header: &str,
    origin: &str,
    now_secs: i64,
) -> Result<serde_json::Value, String> {
    let params = header
        .strip_prefix("vapid ")
        .ok_or("the scheme must be vapid")?;
    let mut token = None;
    let mut key = None;
    for part in params.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => token = Some(v.trim()),
            Some(("k", v)) => key = Some(v.trim()),
            _ => {}
        }
    }
    let (token, key) = token.zip(key).ok_or("t= and k= are required")?;
    let key = URL_SAFE_NO_PAD
        .decode(key)
        .map_err(|_| "k is not base64url")?;
    let key = VerifyingKey::from_sec1_bytes(&key).map_err(|_| "k is not a P-256 key")?;
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("t is not a JWS compact token".into());
    };
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| "bad JWT header encoding")?,
    )
    .map_err(|_| "bad JWT header")?;
    if header["alg"] != "ES256" {
        return Err("alg must be ES256".into());
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| "bad signature encoding")?;
    let sig = Signature::from_slice(&sig).map_err(|_| "the signature must be 64 bytes r‖s")?;
    key.verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "bad signature")?;
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(c)
            .map_err(|_| "bad JWT claims encoding")?,
    )
    .map_err(|_| "bad JWT claims")?;
    if claims["aud"] != origin {
        return Err(format!("aud must be {origin}, is {}", claims["aud"]));
    }
    let exp = claims["exp"].as_i64().ok_or("exp is required")?;
    if exp <= now_secs || exp > now_secs + 24 * 3600 {
        return Err("exp must be in the future and at most 24 h away".into());
    }
    if claims["sub"].as_str().is_none_or(str::is_empty) {
        return Err("sub is required".into());
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    /// RFC 8291, Appendix A, from the receiving side.
    #[test]
    fn decrypts_the_rfc_8291_test_vector() {
        let subscriber = Subscriber {
            secret: SecretKey::from_slice(&b64("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"))
                .unwrap(),
            auth: b64("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap(),
        };
        let body = b64(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
        );
        assert_eq!(
            subscriber.decrypt(&body).unwrap(),
            b"When I grow up, I want to be a watermelon"
        );
        let mut tampered = body;
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(subscriber.decrypt(&tampered).is_err());
        assert!(subscriber.decrypt(&[0_u8; 10]).is_err());
    }

    #[test]
    fn malformed_vapid_headers_are_refused() {
        for bad in [
            "",
            "Bearer x",
            "vapid t=a.b.c",
            "vapid k=AAAA",
            "vapid t=a.b, k=AAAA",
        ] {
            assert!(verify_vapid(bad, "http://x", 0).is_err(), "{bad}");
        }
    }
}
