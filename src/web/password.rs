//! User passwords: Argon2id (argon2 crate defaults: m=19 MiB, t=2, p=1, OWASP's minimum), PHC
//! strings at rest. Verification runs on the blocking pool: it takes tens of milliseconds.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// The longest password accepted (hashing a megabyte of input is a denial of service).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// The fewest characters a new password may have (NIST SP 800-63B §5.1.1.2).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Whether `password` may be given to a user: [`MIN_PASSWORD_CHARS`] characters or more, and no
/// more than [`MAX_PASSWORD_LEN`] bytes (a longer one could never sign in).
pub fn check_new(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters and at most {MAX_PASSWORD_LEN} bytes"
        ));
    }
    Ok(())
}

pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| error.to_string())
}

/// Checks `password` against a stored PHC string; `None` compares against a dummy hash so an
/// unknown username costs as much as a known one (no user enumeration by timing).
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash(&crate::secrets::random_secret()).unwrap_or_default());
    let Ok(parsed) = PasswordHash::new(stored.unwrap_or(dummy)) else {
        return false;
    };
    let matches = password.len() <= MAX_PASSWORD_LEN
        && Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
    matches && stored.is_some()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_verify_only_their_password() {
        let stored = super::hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(super::verify("correct horse", Some(&stored)));
        assert!(!super::verify("wrong", Some(&stored)));
        assert!(!super::verify("correct horse", None));
    }
}
