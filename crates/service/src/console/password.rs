//! Operator names and passwords: argon2id hashes (the `argon2` crate's default parameters,
//! OWASP's recommendation: 19 MiB, 2 passes, 1 lane), verified in constant time; a login for a
//! name that does not exist still runs one verification, so that the answer's timing does not
//! tell which names exist.

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, SaltString},
};
use secrecy::{ExposeSecret, SecretString};

use super::store::PasswordHash;
use crate::store::keys::fill_random;
use byte8_ledger_core::error::{Error, FieldError, Result};

/// The shortest password accepted for an operator.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// The longest (argon2 hashes any length; this bounds the work a login form can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks an operator name: 1 to 64 characters of letters, digits, `.`, `_`, `-` and `@`
/// (a login name or an e-mail address), after trimming.
///
/// # Errors
/// A [`FieldError`] on `name` saying what is allowed.
pub fn check_operator_name(name: &str) -> std::result::Result<String, FieldError> {
    let name = name.trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.chars().count() > 64 || !name.chars().all(allowed) {
        return Err(FieldError::new("name", "1 to 64 characters: letters, digits, '.', '_', '-' or '@'"));
    }
    Ok(name.to_owned())
}

/// Checks a new password: at least [`MIN_PASSWORD_CHARS`] characters, at most
/// [`MAX_PASSWORD_BYTES`] bytes, not only spaces.
///
/// # Errors
/// A [`FieldError`] on `password` (never holding the password).
pub fn check_password(password: &SecretString) -> std::result::Result<(), FieldError> {
    let p = password.expose_secret();
    if p.trim().chars().count() < MIN_PASSWORD_CHARS {
        return Err(FieldError::new("password", format!("at least {MIN_PASSWORD_CHARS} characters")));
    }
    if p.len() > MAX_PASSWORD_BYTES {
        return Err(FieldError::new("password", format!("at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

/// The argon2id hash of `password` with a fresh 128-bit salt, as a PHC string.
///
/// # Errors
/// [`Error::Invalid`] when the password breaks [`check_password`]; [`Error::Internal`] when
/// the operating system gives no random bytes.
pub fn hash_password(password: &SecretString) -> Result<PasswordHash> {
    check_password(password).map_err(|e| Error::Invalid { what: "operator", errors: vec![e] })?;
    let mut salt = [0u8; 16];
    fill_random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::internal(format!("argon2 salt: {e}")))?;
    let hash = Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map_err(|e| Error::internal(format!("argon2: {e}")))?;
    Ok(PasswordHash::new(hash.to_string()))
}

/// A valid hash of a password nobody knows: what a login for an unknown name is verified
/// against, so that it costs the same time as a known one.
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 32];
        let _ = fill_random(&mut random);
        let password = SecretString::from(crate::store::keys::hex_lower(&random));
        hash_password(&password).map(|h| h.expose_secret().to_owned()).unwrap_or_default()
    })
}

/// True when `password` matches `hash`; false for no hash (after the same work), an
/// over-long password, or a stored hash that does not parse (logged, without the hash).
pub fn verify_password(password: &SecretString, hash: Option<&PasswordHash>) -> bool {
    let p = password.expose_secret().as_bytes();
    if p.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let (phc, known) = match hash {
        Some(h) => (h.expose_secret(), true),
        None => (decoy(), false),
    };
    match argon2::password_hash::PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(p, &parsed).is_ok() && known,
        Err(e) => {
            if known {
                tracing::error!(error = %e, "a stored operator password hash does not parse");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only_and_salts_differ() {
        let right = SecretString::from("correct horse battery".to_owned());
        let h1 = hash_password(&right).unwrap();
        let h2 = hash_password(&right).unwrap();
        assert!(h1.expose_secret().starts_with("$argon2id$"), "PHC string of argon2id");
        assert_ne!(h1.expose_secret(), h2.expose_secret(), "a fresh salt each time");
        assert!(verify_password(&right, Some(&h1)));
        assert!(verify_password(&right, Some(&h2)));
        assert!(!verify_password(&SecretString::from("correct horse battery!".to_owned()), Some(&h1)));
        assert!(!verify_password(&right, None), "no operator: never true");
        assert!(!verify_password(&right, Some(&PasswordHash::new("not a phc".into()))));
        assert!(!format!("{h1:?}").contains("argon2"), "Debug hides the hash");
    }

    #[test]
    fn short_passwords_and_odd_names_are_refused_with_the_field_named() {
        let e = hash_password(&SecretString::from("short".to_owned())).unwrap_err();
        assert!(e.to_string().contains("password") && e.to_string().contains("12"), "{e}");
        assert_eq!(check_operator_name("  ada@example.com ").unwrap(), "ada@example.com");
        for bad in ["", " ", "a b", "<script>", &"x".repeat(65)] {
            assert_eq!(check_operator_name(bad).unwrap_err().path, "name", "{bad}");
        }
    }
}
