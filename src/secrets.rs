//! Random secrets and how they are kept: 256-bit values from the OS RNG, base64url without padding,
//! stored only as SHA-256 digests and compared in constant time.
//!
//! A high-entropy random secret needs no slow KDF (it cannot be guessed, only stolen), so client
//! secrets, refresh tokens, authorization codes and session ids all use SHA-256 here; user
//! passwords, which are low-entropy, use Argon2id elsewhere.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Fills `buffer` from the OS RNG. Its failing is unrecoverable for an authorization server:
/// never fall back to a weaker source.
pub(crate) fn fill_random(buffer: &mut [u8]) {
    getrandom::fill(buffer).expect("the operating system's random number generator failed");
}

/// A fresh random value of `bytes` bytes from the OS RNG, base64url-encoded without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    fill_random(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// `length` characters from A-Z, a-z, 0-9, uniformly (rejection sampling): identifiers that are
/// safe everywhere, including as command-line arguments (a base64url id may start with '-').
pub fn random_alphanumeric(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(length);
    let mut buffer = [0u8; 64];
    while out.len() < length {
        fill_random(&mut buffer);
        // 248 = 4 * 62: bytes at or above it would bias the choice, so they are skipped.
        for byte in buffer.iter().filter(|byte| **byte < 248) {
            if out.len() == length {
                break;
            }
            out.push(ALPHABET[usize::from(*byte) % ALPHABET.len()] as char);
        }
    }
    out
}

/// 256 bits: refresh tokens, client secrets, session ids (SPEC: "256 bits from the OS RNG").
pub fn random_secret() -> String {
    random_token(32)
}

/// Bytes of purge time in front of a [`random_dated_secret`]: seconds since the epoch, big-endian.
const DATE_BYTES: usize = 8;
/// Bytes of issue time in front of the dated tokens of the previous release (51 characters).
const ISSUE_DATE_BYTES: usize = 6;
/// What leads the store key of a token that carries its purge time. Not a hex digit, so these
/// keys sort after every other key of their tree and form one range of their own.
const DATED_KEY_PREFIX: u8 = b'x';
/// Length of a key led by [`DATED_KEY_PREFIX`]: the prefix, the purge time, the digest (hex).
const DATED_KEY_LEN: usize = 1 + 2 * DATE_BYTES + 64;

/// An authorization code or refresh token: the time the store may forget it (64 bits, seconds,
/// not secret: a code's `purge_at`, a refresh token's expiry) and 256 random bits, base64url
/// (54 characters). The time leads the token's store key ([`token_key`]), which does two jobs:
///
/// - keys sort by purge time, so the purge finds the tokens it may delete with one range scan of
///   their own tree ([`dated_keys_due`]) and the store writes no separate expiry index entry for
///   them (a rotation writes two records fewer);
/// - a store ordered by key keeps recent tokens together: a token is redeemed or rotated soon
///   after it is issued, and its page is then still cached. With random keys, every exchange and
///   rotation read a random page of a tree that holds every used code and rotated token still
///   kept for replay detection, and missed the cache.
pub fn random_dated_secret(purge_at: i64) -> String {
    let mut buffer = [0u8; DATE_BYTES + 32];
    buffer[..DATE_BYTES].copy_from_slice(&(purge_at.max(0) as u64).to_be_bytes());
    fill_random(&mut buffer[DATE_BYTES..]);
    URL_SAFE_NO_PAD.encode(buffer)
}

/// The store key of a code or refresh token: the SHA-256 digest of the whole token (hex), led by
/// `DATED_KEY_PREFIX` and the purge time (hex) of a token from [`random_dated_secret`]. The
/// dated tokens of the previous release (6 bytes of issue time) keep their key, their issue time
/// then the digest; tokens of any other shape (issued before dated tokens, or garbage) get the
/// bare digest. So every token issued by an earlier release keeps working. Only the digest
/// identifies a token: a presented token with a forged date finds nothing.
pub fn token_key(token: &str) -> String {
    let digest = hash_secret(token);
    let mut decoded = [0u8; DATE_BYTES + 32];
    match URL_SAFE_NO_PAD.decode_slice(token, &mut decoded) {
        Ok(length) if length == DATE_BYTES + 32 => {
            let mut key = String::with_capacity(DATED_KEY_LEN);
            key.push(char::from(DATED_KEY_PREFIX));
            key.push_str(&hex(&decoded[..DATE_BYTES]));
            key.push_str(&digest);
            key
        }
        Ok(length) if length == ISSUE_DATE_BYTES + 32 => {
            let mut key = hex(&decoded[..ISSUE_DATE_BYTES]);
            key.push_str(&digest);
            key
        }
        _ => digest,
    }
}

/// The purge time a store key from [`token_key`] carries, if it carries one.
pub fn key_purge_time(key: &[u8]) -> Option<i64> {
    if key.len() != DATED_KEY_LEN || key[0] != DATED_KEY_PREFIX {
        return None;
    }
    let digits = std::str::from_utf8(&key[1..=2 * DATE_BYTES]).ok()?;
    Some(i64::try_from(u64::from_str_radix(digits, 16).ok()?).unwrap_or(i64::MAX))
}

/// The range of store keys whose purge time is at or before `now`: every key of a code or
/// refresh token the store may delete, and nothing else (other keys are hex, below the prefix).
pub fn dated_keys_due(now: i64) -> std::ops::Range<Vec<u8>> {
    let after = now.saturating_add(1).max(0) as u64;
    let mut end = vec![DATED_KEY_PREFIX];
    end.extend_from_slice(hex(&after.to_be_bytes()).as_bytes());
    vec![DATED_KEY_PREFIX]..end
}

/// The SHA-256 digest of a secret, hex-encoded: what the store keeps instead of the secret.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Lowercase hex. On every client authentication and token lookup: a table, not a `format!` per
/// byte (1.5 µs per request).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// Compares a presented secret with a stored digest in constant time.
pub fn secret_matches(presented: &str, stored_hash: &str) -> bool {
    let presented_hash = hash_secret(presented);
    bool::from(presented_hash.as_bytes().ct_eq(stored_hash.as_bytes()))
}

/// Constant-time equality of two strings (CSRF tokens and the like).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// base64url without padding of arbitrary bytes.
pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of `input`, base64url without padding (PKCE S256, RFC 7638 thumbprints).
pub fn sha256_base64url(input: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_256_bits_and_distinct() {
        let a = random_secret();
        let b = random_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }

    #[test]
    fn dated_tokens_have_256_random_bits_and_keys_in_purge_order() {
        let (early, late) = (random_dated_secret(1_700_000_000), random_dated_secret(1_700_000_001));
        assert_eq!(early.len(), 54);
        assert_ne!(random_dated_secret(1_700_000_000), early, "the random part differs");
        let (early_key, late_key) = (token_key(&early), token_key(&late));
        assert!(early_key < late_key, "keys sort by purge time");
        assert_eq!(early_key.len(), DATED_KEY_LEN);
        assert!(early_key.ends_with(&hash_secret(&early)), "the digest of the whole token");
        assert!(early_key.starts_with(&format!("x{:016x}", 1_700_000_000)));
        assert_eq!(key_purge_time(early_key.as_bytes()), Some(1_700_000_000));
        // Tokens issued before dated ones, and anything else, keep the bare digest and no time.
        let legacy = random_secret();
        assert_eq!(token_key(&legacy), hash_secret(&legacy));
        assert_eq!(key_purge_time(token_key(&legacy).as_bytes()), None);
        assert_eq!(token_key("not base64 at all!"), hash_secret("not base64 at all!"));
    }

    /// The dated tokens of the previous release (6 bytes of issue time, 51 characters) keep the
    /// key they were stored under, and carry no purge time (they have expiry index entries).
    #[test]
    fn tokens_dated_by_the_previous_release_keep_their_key() {
        let mut previous = vec![0u8; ISSUE_DATE_BYTES + 32];
        previous[..ISSUE_DATE_BYTES].copy_from_slice(&1_700_000_000u64.to_be_bytes()[2..]);
        let previous = URL_SAFE_NO_PAD.encode(&previous);
        assert_eq!(previous.len(), 51);
        let key = token_key(&previous);
        assert_eq!(key, format!("{:012x}{}", 1_700_000_000, hash_secret(&previous)));
        assert_eq!(key_purge_time(key.as_bytes()), None);
    }

    #[test]
    fn the_due_range_holds_exactly_the_keys_whose_time_has_come() {
        let due = dated_keys_due(1_700_000_000);
        for (time, expected) in
            [(0, true), (1_699_999_999, true), (1_700_000_000, true), (1_700_000_001, false)]
        {
            let key = token_key(&random_dated_secret(time));
            assert_eq!(due.contains(&key.into_bytes()), expected, "purge time {time}");
        }
        for other in [token_key(&random_secret()), "f".repeat(76), "~".into()] {
            assert!(!due.contains(&other.into_bytes()), "only dated keys are in the range");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_presented_token_gets_a_key_ending_in_its_digest(
            token in proptest::prop_oneof!["\\PC{0,80}", "[A-Za-z0-9_-]{50,55}"]
        ) {
            let key = token_key(&token);
            proptest::prop_assert!(key.ends_with(&hash_secret(&token)));
            proptest::prop_assert!(key.len() == 64 || key.len() == 76 || key.len() == DATED_KEY_LEN);
            proptest::prop_assert_eq!(key_purge_time(key.as_bytes()).is_some(), key.len() == DATED_KEY_LEN);
        }
    }

    #[test]
    fn secret_digests_are_lowercase_hex_sha256() {
        // FIPS 180-2 Appendix B.1: SHA-256("abc"). Stored client secrets depend on this spelling.
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(secret_matches("abc", &hash_secret("abc")));
        assert!(!secret_matches("abd", &hash_secret("abc")));
    }

    #[test]
    fn alphanumeric_ids_have_the_length_and_alphabet() {
        for _ in 0..100 {
            let id = random_alphanumeric(24);
            assert_eq!(id.len(), 24);
            assert!(id.bytes().all(|byte| byte.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn stored_hash_matches_only_its_secret() {
        let secret = random_secret();
        let stored = hash_secret(&secret);
        assert!(secret_matches(&secret, &stored));
        assert!(!secret_matches("something else", &stored));
        assert_ne!(stored, secret);
    }
}
