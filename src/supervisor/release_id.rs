//! A release's id: a leaf, imported by the store that mints it, the machine that
//! decides on it and the status that shows it.

use serde::{Deserialize, Serialize};

/// The installed binary's release id.
pub const INSTALLED: &str = "0";

/// A release's name in the store: `0` for the installed binary, then
/// `<n>-<first 8 hex of sha256>`. A type of its own so that a release is never confused
/// with the other strings beside it (a version, a reason, an event's text).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReleaseId(String);

impl ReleaseId {
    /// The installed binary's release.
    pub fn installed() -> Self {
        Self(INSTALLED.into())
    }

    /// The id as written in the store and on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: a listing lines ids up with `{:<12}`.
        f.pad(&self.0)
    }
}

impl From<&str> for ReleaseId {
    fn from(id: &str) -> Self {
        Self(id.into())
    }
}

impl From<String> for ReleaseId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

/// Read as the string it is (to look it up, print it, or compare it with one); made only
/// on purpose, with `From`.
impl std::ops::Deref for ReleaseId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ReleaseId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ReleaseId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ReleaseId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}
