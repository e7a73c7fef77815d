//! Keeps exactly one healthy worker serving phones, across crashes, bad releases and
//! restarts (DESIGN.md "Supervisor"). Both shells — `chroxy start` and the tray app —
//! run this, so every user gets the same restart policy.

pub mod handle;
pub mod health;
pub mod release;
pub mod state;
pub mod status;
