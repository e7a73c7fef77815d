//! The status page (in progress).
