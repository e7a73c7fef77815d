//! Keeps exactly one healthy worker serving phones, across crashes, bad releases and
//! restarts (DESIGN.md "Supervisor"). Both shells — `chroxy start` and the tray app —
//! run this, so every user gets the same restart policy.

pub mod child;
pub mod handle;
pub mod health;
pub mod instance;
mod loopback;
pub mod proxy;
pub mod release;
pub mod remote;
mod runner;
pub mod state;
pub mod status;
pub mod switch;
pub mod terminal;

pub use runner::{Options, Supervisor, SupervisorError};
