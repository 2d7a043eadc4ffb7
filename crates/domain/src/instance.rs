//! Managed instances: the rule an instance's name obeys.
//!
//! One definition for everyone who names an instance: ModifyManagedInstance checks a
//! new name with it, and registration uses it to decide whether the activation's
//! `InstanceName` or the host's name can name the new instance.

/// The longest managed instance name.
pub const MAX_INSTANCE_NAME: usize = 128;

/// Why a name is not a valid instance name (the wire codes are the API's:
/// `InstanceName.ExceedLimit`, `InstanceName.InvalidPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceNameError {
    /// Longer than [`MAX_INSTANCE_NAME`] characters.
    ExceedLimit,
    /// Shorter than 2 characters, not starting with a letter, or holding a character
    /// other than letters, digits, `.`, `_`, `-` and `:`.
    InvalidPattern,
}

/// ModifyManagedInstance's rule for a name: 2 to 128 characters, starting with a
/// letter, then letters, digits, `.`, `_`, `-` and `:` (so never `http://…`).
pub fn check_instance_name(name: &str) -> Result<(), InstanceNameError> {
    // Counting stops past the limit: a name of a megabyte costs no more than one of
    // 129 characters.
    let n = name.chars().take(MAX_INSTANCE_NAME + 1).count();
    if n > MAX_INSTANCE_NAME {
        return Err(InstanceNameError::ExceedLimit);
    }
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(char::is_alphabetic);
    let rest_ok = chars.all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if n < 2 || !starts_with_letter || !rest_ok {
        return Err(InstanceNameError::InvalidPattern);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_follow_the_vendor_rule() {
        for ok in [
            "ab",
            "web-01",
            "db.prod:primary_2",
            "Ünïcode-host",
            "mi-0123456789abcdefghij",
            &"a".repeat(128),
        ] {
            assert_eq!(check_instance_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_instance_name(&"a".repeat(129)),
            Err(InstanceNameError::ExceedLimit)
        );
        assert_eq!(
            check_instance_name(&"a".repeat(1 << 20)),
            Err(InstanceNameError::ExceedLimit)
        );
        for bad in [
            "",
            "a",
            "1web",
            "-web",
            "http://x",
            "web server",
            "web/1",
            ".web",
        ] {
            assert_eq!(
                check_instance_name(bad),
                Err(InstanceNameError::InvalidPattern),
                "{bad}"
            );
        }
    }
}
