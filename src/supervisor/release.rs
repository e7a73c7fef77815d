//! The release store (in progress).
