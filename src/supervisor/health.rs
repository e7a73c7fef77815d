//! The health gate (in progress).
