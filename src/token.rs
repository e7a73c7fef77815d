//! The bearer token phones authenticate with (and the admin token of the status page's
//! actions, and a named tunnel's token), as a value: made, compared in constant time,
//! handed on, never shown. A leaf of its own so that the worker, the supervisor and the
//! tunnel can hold one without the keyring and the files `secrets` keeps it in.

use std::fmt;

use base64::Engine;
use subtle::ConstantTimeEq;

/// The OS random source failed, so no token could be made.
#[derive(Debug, thiserror::Error)]
#[error("the system random generator failed: {0}")]
pub struct NoRandomness(String);

/// A secret bearer token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token received from elsewhere (e.g. `CHROXY_TOKEN`, a secret file).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// 32 random bytes, base64url without padding.
    pub fn generate() -> Result<Self, NoRandomness> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| NoRandomness(e.to_string()))?;
        Ok(Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ))
    }

    /// Constant-time comparison, so response timing reveals nothing about the token.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }

    /// The secret itself, for the few places that must hand it on (child environment,
    /// pairing link). Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the token replaced by `label`: for what a child
    /// process printed (a broken worker, cloudflared, a build) before it reaches a log,
    /// a status or an error message.
    pub fn redact(&self, text: String, label: &str) -> String {
        if !self.0.is_empty() && text.contains(&self.0) {
            text.replace(&self.0, label)
        } else {
            text
        }
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_and_debug() {
        let t = ApiToken::new("s3cret-value");
        assert!(t.matches("s3cret-value"));
        assert!(!t.matches("s3cret-valu"));
        assert!(!t.matches(""));
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn generated_tokens_are_43_characters_and_differ() {
        let (a, b) = (ApiToken::generate().unwrap(), ApiToken::generate().unwrap());
        assert_eq!(a.expose().len(), 43, "32 bytes base64url");
        assert_ne!(a, b);
    }
}
