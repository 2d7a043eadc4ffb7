//! The line that installs an agent on a host, as the API's CreateActivation
//! (`InstallCommand`, an OCA extension) and `oca activations create` print it:
//!
//! ```text
//! oca-agent install --server https://oca.example.com:7070 --activation-id act-… \
//!                   --activation-code … --fingerprint sha256:…
//! ```
//!
//! `oca-agent install` (crate `oca-agent`) takes exactly these flags; its tests parse
//! this line with its own command line.

use std::borrow::Cow;
use std::fmt;

/// What a host needs to join: where the server is, the activation, and what to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallLine<'a> {
    /// `https://host:port` as the hosts reach the server.
    pub server: &'a str,
    pub activation_id: &'a str,
    pub activation_code: &'a str,
    /// The server's private CA (`sha256:…`); `None` when the hosts trust the server's
    /// certificate otherwise (the system's roots) or it speaks plain HTTP.
    pub fingerprint: Option<&'a str>,
}

impl fmt::Display for InstallLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "oca-agent install --server {} --activation-id {} --activation-code {}",
            shell_quote(self.server),
            shell_quote(self.activation_id),
            shell_quote(self.activation_code)
        )?;
        if let Some(fp) = self.fingerprint {
            write!(f, " --fingerprint {}", shell_quote(fp))?;
        }
        Ok(())
    }
}

/// `s` as one word of a POSIX shell: as it is when it holds only characters no shell
/// reads specially, else in single quotes.
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_every_flag_and_quotes_only_what_needs_it() {
        let line = InstallLine {
            server: "https://oca.example.com:7070",
            activation_id: "act-abc",
            activation_code: "Code123",
            fingerprint: Some("sha256:00ff"),
        };
        assert_eq!(
            line.to_string(),
            "oca-agent install --server https://oca.example.com:7070 --activation-id act-abc \
             --activation-code Code123 --fingerprint sha256:00ff"
        );
        let plain = InstallLine {
            fingerprint: None,
            server: "http://[::1]:7070",
            ..line
        };
        assert_eq!(
            plain.to_string(),
            "oca-agent install --server 'http://[::1]:7070' --activation-id act-abc \
             --activation-code Code123"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(x)"), "'$(x)'");
    }
}
