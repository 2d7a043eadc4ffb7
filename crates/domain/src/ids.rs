//! Resource ids. Every id is a prefix and a random lowercase alphanumeric body, like the
//! cloud's (`c-hz0jdfwcsr4x…`), so ids never reveal counts or creation order.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const BODY_LEN: usize = 20;

fn random_body(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Prefix of command ids.
pub const COMMAND_PREFIX: &str = "c-";
/// Prefix of invocation ids.
pub const INVOKE_PREFIX: &str = "t-";
/// Prefix of file deliveries' invocation ids (SendFile).
pub const FILE_INVOKE_PREFIX: &str = "f-";
/// Prefix of managed instance ids (hosts registered with an activation code).
pub const MANAGED_INSTANCE_PREFIX: &str = "mi-";
/// Prefix of activation ids.
pub const ACTIVATION_PREFIX: &str = "act-";

pub fn new_command_id() -> String {
    format!("{COMMAND_PREFIX}{}", random_body(BODY_LEN))
}

pub fn new_invoke_id() -> String {
    format!("{INVOKE_PREFIX}{}", random_body(BODY_LEN))
}

pub fn new_file_invoke_id() -> String {
    format!("{FILE_INVOKE_PREFIX}{}", random_body(BODY_LEN))
}

pub fn new_managed_instance_id() -> String {
    format!("{MANAGED_INSTANCE_PREFIX}{}", random_body(BODY_LEN))
}

pub fn new_activation_id() -> String {
    format!("{ACTIVATION_PREFIX}{}", random_body(BODY_LEN))
}

/// An access key id, `LTAI` followed by 20 characters as the cloud's are.
pub fn new_access_key_id() -> String {
    let mut rng = rand::rng();
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let body: String = (0..20)
        .map(|_| UPPER[rng.random_range(0..UPPER.len())] as char)
        .collect();
    format!("LTAI{body}")
}

/// A random secret of `len` url-safe characters (access key secrets, agent tokens,
/// activation codes).
pub fn new_secret(len: usize) -> String {
    let mut rng = rand::rng();
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// A request id in the cloud's form: an upper-case UUID.
pub fn new_request_id() -> String {
    let mut rng = rand::rng();
    let b: [u8; 16] = rng.random();
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `id` has the shape of an id with `prefix` (prefix, then 1..=64 of `[a-z0-9]`).
/// Used to answer malformed ids with NotFound without touching the store.
pub fn looks_like(id: &str, prefix: &str) -> bool {
    match id.strip_prefix(prefix) {
        Some(body) => {
            !body.is_empty()
                && body.len() <= 64
                && body
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_prefix_and_shape() {
        assert!(looks_like(&new_command_id(), COMMAND_PREFIX));
        assert!(looks_like(&new_invoke_id(), INVOKE_PREFIX));
        assert!(looks_like(
            &new_managed_instance_id(),
            MANAGED_INSTANCE_PREFIX
        ));
        assert!(!looks_like("c-", COMMAND_PREFIX));
        assert!(!looks_like("t-ABC", INVOKE_PREFIX));
        assert!(!looks_like("x-abc", INVOKE_PREFIX));
    }

    #[test]
    fn ids_are_unique() {
        let a: std::collections::HashSet<_> = (0..1000).map(|_| new_invoke_id()).collect();
        assert_eq!(a.len(), 1000);
    }

    #[test]
    fn request_id_is_uuid_shaped() {
        let r = new_request_id();
        assert_eq!(r.len(), 36);
        assert_eq!(r.matches('-').count(), 4);
        assert!(r.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(r, r.to_uppercase());
    }

    #[test]
    fn access_keys_look_like_the_clouds() {
        let k = new_access_key_id();
        assert!(k.starts_with("LTAI"));
        assert_eq!(k.len(), 24);
        assert_eq!(new_secret(30).len(), 30);
    }
}
