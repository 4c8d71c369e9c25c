//! The `aes128gcm` encrypted content coding (RFC 8188) with Web Push's key derivation
//! (RFC 8291): a fresh sender key pair and salt per message, one record.

use crate::PushError;
use aes_gcm::aead::Aead;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

/// The record size announced in the header. One record carries the whole message.
const RECORD_SIZE: u32 = 4096;
/// AES-GCM tag plus the one-byte padding delimiter.
const OVERHEAD: usize = 16 + 1;

/// Encrypts `plaintext` for a subscription: `ua_public` is its 65-byte `p256dh` key,
/// `auth` its 16-byte secret. Returns the request body.
///
/// # Errors
/// A malformed browser key or secret; a message over one record.
pub fn encrypt(plaintext: &[u8], ua_public: &[u8], auth: &[u8]) -> Result<Vec<u8>, PushError> {
    let sender = SecretKey::random(&mut OsRng);
    let mut salt = [0_u8; 16];
    OsRng.fill_bytes(&mut salt);
    encrypt_with(plaintext, ua_public, auth, &sender, salt)
}

/// [`encrypt`] with the sender key and salt given (for the RFC's test vector).
pub(crate) fn encrypt_with(
    plaintext: &[u8],
    ua_public: &[u8],
    auth: &[u8],
    sender: &SecretKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, PushError> {
    if auth.len() != 16 {
        return Err(PushError::Key("the auth secret must be 16 bytes".into()));
    }
    if plaintext.len() + OVERHEAD > RECORD_SIZE as usize {
        return Err(PushError::TooLarge(plaintext.len()));
    }
    let ua = PublicKey::from_sec1_bytes(ua_public)
        .map_err(|_| PushError::Key("p256dh is not a P-256 public key".into()))?;
    let ua_bytes = ua.to_encoded_point(false);
    let as_bytes = sender.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(sender.to_nonzero_scalar(), ua.as_affine());

    // IKM = HKDF(auth, ecdh, "WebPush: info" 0x00 ua_public as_public, 32)
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(ua_bytes.as_bytes());
    key_info.extend_from_slice(as_bytes.as_bytes());
    let mut ikm = [0_u8; 32];
    Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .map_err(|_| PushError::Crypto)?;

    let prk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let mut cek = [0_u8; 16];
    let mut nonce = [0_u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .map_err(|_| PushError::Crypto)?;
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(|_| PushError::Crypto)?;

    // The last (only) record ends with the delimiter 0x02 and no further padding.
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(2);
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|_| PushError::Crypto)?;
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), record.as_slice())
        .map_err(|_| PushError::Crypto)?;

    // Header: salt, record size, key id length, key id (the sender's public key).
    let mut body = Vec::with_capacity(16 + 4 + 1 + 65 + sealed.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_bytes.as_bytes());
    body.extend_from_slice(&sealed);
    Ok(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    /// RFC 8291, Appendix A.
    #[test]
    fn matches_the_rfc_8291_test_vector() {
        let sender =
            SecretKey::from_slice(&b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        let ua_public = b64(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        );
        let auth = b64("BTBZMqHH6r4Tts7J_aSIgg");
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = encrypt_with(
            b"When I grow up, I want to be a watermelon",
            &ua_public,
            &auth,
            &sender,
            salt,
        )
        .unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    /// The fake push service decrypts with its own implementation.
    #[test]
    fn the_independent_implementation_decrypts_it() {
        let subscriber = mainloop_fake_push::Subscriber::generate();
        let message = r#"{"title":"hé","body":"x"}"#.as_bytes();
        let body = encrypt(message, &subscriber.public_key(), &subscriber.auth).unwrap();
        assert_eq!(subscriber.decrypt(&body).unwrap(), message);
        // Every message gets a fresh key and salt.
        let again = encrypt(message, &subscriber.public_key(), &subscriber.auth).unwrap();
        assert_ne!(body, again);
        assert_eq!(subscriber.decrypt(&again).unwrap(), message);
    }

    #[test]
    fn bad_keys_and_oversized_messages_are_refused() {
        let subscriber = mainloop_fake_push::Subscriber::generate();
        let pk = subscriber.public_key();
        assert!(matches!(
            encrypt(b"x", &[4_u8; 65], &subscriber.auth),
            Err(PushError::Key(_))
        ));
        assert!(matches!(
            encrypt(b"x", &pk, &[0_u8; 15]),
            Err(PushError::Key(_))
        ));
        assert!(matches!(
            encrypt(&[b'a'; 4080], &pk, &subscriber.auth),
            Err(PushError::TooLarge(4080))
        ));
        assert!(encrypt(&[b'a'; 4079], &pk, &subscriber.auth).is_ok());
    }
}
