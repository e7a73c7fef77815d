//! Chroxy: supervise Claude Code on your machine from your phone.
//!
//! # Layout
//! - [`protocol`]: the phone ↔ worker wire protocol (docs/protocol.md).
//! - [`worker`]: the server phones talk to; [`session`]: sessions, history, fan-out;
//!   [`agent`]: the Claude Code CLI driver.
//! - [`store`]: paths and atomic, locked files; [`config`]: the settings file;
//!   [`token`]: the API token as a value; [`secrets`]: where tokens are kept;
//!   [`devices`]: which devices may connect; [`channel`]: protocol v2's encryption;
//!   [`envelope`]: Chroxy's own clients' encryption; [`control`]: worker → supervisor messages;
//!   [`keeper`]: the CLIs' pipes held by the supervisor, so a worker's death spares them;
//!   [`process`]: owned child processes; [`environment`]: what the `CHROXY_*` variables
//!   say; [`signals`]: how a process is asked to stop; [`push`]: notifications to phones
//!   that are not looking (Web Push).
//! - [`supervisor`]: keeps a healthy worker behind the public port, and turns a source
//!   tree into a release (`chroxy deploy --source`); [`launch`]: starts it
//!   from what a person chose (`chroxy start`, the tray app); [`tunnel`], [`pairing`].
//! - [`desktop`]: the tray app's window and menu as data, and its actions on the
//!   supervisor it runs in-process.
//!
//! The `chroxy` binary and the tray app (`src-tauri`) are thin shells over this library.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(rust_2018_idioms)]

pub mod agent;
pub mod backoff;
pub mod channel;
pub mod config;
pub mod control;
pub mod demo;
pub mod desktop;
pub mod devices;
pub mod doctor;
pub mod envelope;
pub mod environment;
pub mod forwarded;
pub mod keeper;
pub mod launch;
pub mod pairing;
pub mod process;
pub mod protocol;
pub mod push;
pub mod rules;
pub mod secrets;
pub mod service;
pub mod session;
pub mod signals;
pub mod status_page;
pub mod store;
pub mod supervisor;
pub mod token;
pub mod tunnel;
pub mod worker;
