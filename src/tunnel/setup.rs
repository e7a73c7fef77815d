//! `chroxy tunnel setup`: a named tunnel set up in one sitting (issue 18). A named
//! tunnel needs three things that live in three places — the tunnel and its Public
//! Hostname in the Cloudflare dashboard, `[tunnel] hostname` in the config file, the
//! token in the keyring — and until now a mistake in any of them showed only as a
//! phone that could not connect. This says what to create, checks what is pasted
//! before storing it, writes both, and proves the hostname reaches this machine.
//!
//! The CLI is a shell over three calls: [`configure`] (blocking: prompts, the config
//! file, the keyring — outside any async runtime, as the keyring needs), then
//! [`check::check`] (async), then [`next_steps`]. Input validation: `validate.rs`.

use std::io::Write;
use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::secrets::{Backend, Secrets, SecretsError};
use crate::store::{atomic_write, StoreError};
use crate::token::ApiToken;

pub mod check;
mod validate;

pub use check::{check, CheckError, CheckSpec};
pub use validate::{
    check_token_shape, parse_hostname, parse_token, Hostname, HostnameError, TokenShapeError,
};

/// What a person answers, from a terminal or a pipe. The CLI's implementation reads
/// standard input; tests script it.
pub trait Answers {
    /// A person is there to be asked (standard input is a terminal).
    fn is_terminal(&self) -> bool;
    /// One line (the hostname); `None` at end of input.
    fn line(&mut self) -> std::io::Result<Option<String>>;
    /// The token: at a terminal one line, not echoed; otherwise all of the input.
    fn secret(&mut self) -> std::io::Result<String>;
}

/// Why the set-up stopped. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// No hostname, and nobody to ask.
    #[error("give the tunnel's Public Hostname: `chroxy tunnel setup --hostname chroxy.example.com` (standard input is not a terminal to ask at)")]
    NoHostname,
    /// The hostname is not one.
    #[error(transparent)]
    Hostname(#[from] HostnameError),
    /// The config file cannot be read or does not parse; it is left as it is. (Not a
    /// `source`: the message already holds it, and a chain would say it twice.)
    #[error("{0}\n(`chroxy tunnel setup` left it untouched)")]
    Config(ConfigError),
    /// `[tunnel]` in the config is not a table.
    #[error("{path}: `tunnel` is not a table, so `hostname` cannot go in it; make it a `[tunnel]` section (the file is left untouched)")]
    TunnelNotATable {
        /// The config file.
        path: std::path::PathBuf,
    },
    /// Nothing entered, and no token stored to keep.
    #[error("no tunnel token entered and none is stored: paste the token from the Cloudflare dashboard (Networks ▸ Tunnels ▸ your tunnel ▸ the install command's long string starting with `eyJ`), or pipe it in: `chroxy tunnel setup --hostname H < token.txt`")]
    NoToken,
    /// What was entered is not a tunnel token (never echoed).
    #[error(transparent)]
    TokenShape(#[from] TokenShapeError),
    /// The config file could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The keyring (or its fallback files) failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// Reading the answers or writing the dialogue failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<ConfigError> for SetupError {
    fn from(e: ConfigError) -> Self {
        SetupError::Config(e)
    }
}

/// What [`configure`] settled.
#[derive(Debug, Clone)]
pub struct Configured {
    /// The hostname, as written to the config.
    pub hostname: String,
    /// The token now stored.
    pub token: ApiToken,
    /// The config as it is now (for the check's `[tunnel]` timing).
    pub config: Config,
}

/// What to create in the Cloudflare dashboard, for a tunnel to `port`.
pub fn instructions(port: u16) -> String {
    format!(
        "\
Set up a named Cloudflare tunnel for Chroxy (an address that stays the same):
  1. Your domain must be on Cloudflare (its DNS managed there).
  2. In the Cloudflare Zero Trust dashboard (https://one.dash.cloudflare.com): Networks ▸ Tunnels ▸
     Create a tunnel, type Cloudflared; give it a name (e.g. chroxy).
  3. Copy its token: the install command the dashboard shows ends with it (the long string
     starting with `eyJ`, after `service install` or `--token`). You need not run that command:
     Chroxy runs cloudflared itself.
  4. Add a Public Hostname to the tunnel, e.g. chroxy.example.com, with service type HTTP and
     URL 127.0.0.1:{port} (that is, http://127.0.0.1:{port}: Chroxy's public port).
"
    )
}

/// Asks for (or takes) the hostname and the token, checks both, then writes the
/// hostname into the config file (keeping everything else in it) and stores the token.
/// Nothing is written unless both are good, and a config file that does not parse is
/// refused before anything is asked. Blocking.
pub fn configure(
    config_file: &Path,
    secrets: &Secrets,
    hostname: Option<&str>,
    answers: &mut dyn Answers,
    out: &mut dyn Write,
) -> Result<Configured, SetupError> {
    // Refused first: nobody should paste a token only to hear the file is broken.
    let text = read_config(config_file)?;
    parse_document(config_file, &text)?;

    let given = match hostname {
        Some(h) => h.to_owned(),
        None if answers.is_terminal() => {
            write!(out, "Public Hostname (e.g. chroxy.example.com): ")?;
            out.flush()?;
            answers.line()?.ok_or(SetupError::NoHostname)?
        }
        None => return Err(SetupError::NoHostname),
    };
    let host = parse_hostname(&given)?;
    if let Some(stripped) = &host.stripped {
        writeln!(
            out,
            "Took {stripped} off: the hostname is {} (Cloudflare serves it on https).",
            host.name
        )?;
    }

    let stored = secrets.tunnel_token()?;
    if answers.is_terminal() {
        let keep = if stored.is_some() {
            "; Enter keeps the one stored"
        } else {
            ""
        };
        write!(out, "Tunnel token (not shown as you type{keep}): ")?;
        out.flush()?;
    }
    let entered = answers.secret()?;
    let token = if entered.trim().is_empty() {
        let token = stored.ok_or(SetupError::NoToken)?;
        writeln!(out, "Kept the tunnel token already stored.")?;
        (token, false)
    } else {
        let (token, from_command) = parse_token(&entered)?;
        if from_command {
            writeln!(out, "Took the token from the pasted install command.")?;
        }
        (ApiToken::new(token), true)
    };

    let edited = edited_config(config_file, &text, &host.name)?;
    if edited == text {
        writeln!(
            out,
            "{} already has hostname = \"{}\" under [tunnel].",
            config_file.display(),
            host.name
        )?;
    } else {
        atomic_write(config_file, edited.as_bytes())?;
        writeln!(
            out,
            "Wrote hostname = \"{}\" under [tunnel] in {}.",
            host.name,
            config_file.display()
        )?;
    }
    let (token, new) = token;
    if new {
        secrets.set_tunnel_token(token.expose())?;
        let place = match secrets.backend() {
            Backend::Keyring(_) => "the OS keyring",
            Backend::File(_) => "a 0600 file in the config directory (no usable OS keyring)",
        };
        writeln!(out, "Stored the tunnel token in {place}.")?;
    }
    let config = Config::load(config_file)?;
    Ok(Configured {
        hostname: host.name,
        token,
        config,
    })
}

/// What to run once the tunnel is set up.
pub fn next_steps(hostname: &str, port: u16) -> String {
    let port_flag = if port == 8765 {
        String::new()
    } else {
        format!(" --port {port}")
    };
    format!(
        "Next: `chroxy start --tunnel named{port_flag}` (or in the tray app: Tunnel ▸ Named), then pair your phone: its link and QR code point at https://{hostname}."
    )
}

/// `text` as an editable document, if it is a valid Chroxy config: the config's own
/// rules (unknown keys, types) first, for the same error `chroxy start` would give.
fn parse_document(path: &Path, text: &str) -> Result<toml_edit::DocumentMut, ConfigError> {
    Config::parse(path, text)?;
    text.parse()
        .map_err(|e: toml_edit::TomlError| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_owned(),
        })
}

/// The config file's text; a missing file is empty.
fn read_config(path: &Path) -> Result<String, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `text` with `[tunnel] hostname = "<hostname>"`, everything else (comments, order,
/// other keys and tables) as it was. Refuses a `text` that is not a valid Chroxy config.
fn edited_config(path: &Path, text: &str, hostname: &str) -> Result<String, SetupError> {
    let mut doc = parse_document(path, text)?;
    let tunnel = doc
        .as_table_mut()
        .entry("tunnel")
        .or_insert(toml_edit::table());
    let Some(tunnel) = tunnel.as_table_like_mut() else {
        return Err(SetupError::TunnelNotATable {
            path: path.to_path_buf(),
        });
    };
    match tunnel
        .get_mut("hostname")
        .and_then(|item| item.as_value_mut())
    {
        // The old value's surroundings (a comment after it) stay.
        Some(old) => {
            let decor = old.decor().clone();
            *old = hostname.into();
            *old.decor_mut() = decor;
        }
        None => {
            tunnel.insert("hostname", toml_edit::value(hostname));
        }
    }
    let edited = doc.to_string();
    Config::parse(path, &edited)?;
    Ok(edited)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::store::Paths;

    /// Answers from a script, as a terminal or a pipe.
    struct Script {
        terminal: bool,
        lines: Vec<String>,
        secret: String,
    }

    impl Answers for Script {
        fn is_terminal(&self) -> bool {
            self.terminal
        }
        fn line(&mut self) -> std::io::Result<Option<String>> {
            Ok((!self.lines.is_empty()).then(|| self.lines.remove(0)))
        }
        fn secret(&mut self) -> std::io::Result<String> {
            Ok(std::mem::take(&mut self.secret))
        }
    }

    fn good_token() -> String {
        base64::engine::general_purpose::STANDARD.encode(
            r#"{"a":"0123456789abcdef","t":"6ff42ae2-765d-4adf-8112-31c55c1551ef","s":"c2VjcmV0"}"#,
        )
    }

    #[test]
    fn the_hostname_goes_under_tunnel_and_every_comment_key_and_table_stays() {
        let path = Path::new("config.toml");
        let text = "# my settings\n[worker]\ncoalesce_ms = 20 # fast\n\n[tunnel]\n# hostname = \"old\"\nstart_timeout_ms = 5000\n\n[security]\nallow_token_auth = true\n";
        let edited = edited_config(path, text, "chroxy.example.com").unwrap();
        assert_eq!(
            edited,
            text.replace(
                "start_timeout_ms = 5000\n",
                "start_timeout_ms = 5000\nhostname = \"chroxy.example.com\"\n"
            )
        );
        // Replaced in place, its comment kept.
        let again = edited_config(
            path,
            "[tunnel]\nhostname = \"old.example.com\" # mine\n",
            "new.example.com",
        )
        .unwrap();
        assert_eq!(again, "[tunnel]\nhostname = \"new.example.com\" # mine\n");
        // No [tunnel] yet, or no file: one is added.
        assert_eq!(
            edited_config(path, "", "a.example.com").unwrap(),
            "[tunnel]\nhostname = \"a.example.com\"\n"
        );
        let inline =
            edited_config(path, "tunnel = { start_timeout_ms = 1 }\n", "a.example.com").unwrap();
        assert_eq!(
            Config::parse(path, &inline).unwrap().tunnel.hostname,
            Some("a.example.com".into())
        );
    }

    #[test]
    fn a_config_that_does_not_parse_is_refused_before_anything_is_asked_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let file = paths.config_file();
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let corrupt = b"[tunnel\nhostname = \"x\n\xff";
        std::fs::write(&file, corrupt).unwrap();
        let secrets = Secrets::files(&paths);
        let mut script = Script {
            terminal: true,
            lines: vec!["chroxy.example.com".into()],
            secret: good_token(),
        };
        let mut out = Vec::new();
        let err = configure(&file, &secrets, None, &mut script, &mut out).unwrap_err();
        assert!(matches!(err, SetupError::Config(_)), "{err}");
        assert!(err.to_string().contains("untouched"), "{err}");
        assert!(out.is_empty(), "asked anyway: {out:?}");
        assert_eq!(std::fs::read(&file).unwrap(), corrupt);
        assert!(secrets.tunnel_token().unwrap().is_none());
        // Valid TOML that is not a valid config: refused the same way.
        std::fs::write(&file, "[tunnel]\nhostnme = \"typo\"\n").unwrap();
        let err = configure(
            &file,
            &secrets,
            Some("a.example.com"),
            &mut script,
            &mut out,
        )
        .unwrap_err();
        assert!(err.to_string().contains("hostnme"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "[tunnel]\nhostnme = \"typo\"\n"
        );
    }

    #[test]
    fn at_a_terminal_enter_keeps_the_stored_token_and_with_none_stored_it_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let file = paths.config_file();
        let secrets = Secrets::files(&paths);
        let script = |secret: &str| Script {
            terminal: true,
            lines: vec!["https://chroxy.example.com/".into()],
            secret: secret.into(),
        };
        let mut out = Vec::new();
        let err = configure(&file, &secrets, None, &mut script("\n"), &mut out).unwrap_err();
        assert!(matches!(err, SetupError::NoToken), "{err}");
        assert!(!file.exists(), "nothing written without a token");

        let done = configure(&file, &secrets, None, &mut script(&good_token()), &mut out).unwrap();
        assert_eq!(done.hostname, "chroxy.example.com");
        assert_eq!(
            secrets.tunnel_token().unwrap().unwrap().expose(),
            good_token()
        );
        let said = String::from_utf8(std::mem::take(&mut out)).unwrap();
        assert!(
            said.contains("Took `https://` and the trailing `/` off"),
            "{said}"
        );
        assert!(
            !said.contains(&good_token()),
            "the token was echoed: {said}"
        );

        let kept = configure(&file, &secrets, None, &mut script(""), &mut out).unwrap();
        assert_eq!(kept.token.expose(), good_token());
        let said = String::from_utf8(out).unwrap();
        assert!(said.contains("Enter keeps the one stored"), "{said}");
        assert!(
            said.contains("Kept the tunnel token already stored"),
            "{said}"
        );
        assert!(said.contains("already has hostname"), "{said}");
    }

    #[test]
    fn from_a_pipe_the_hostname_must_be_given() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let mut script = Script {
            terminal: false,
            lines: vec!["chroxy.example.com".into()],
            secret: good_token(),
        };
        let err = configure(
            &paths.config_file(),
            &Secrets::files(&paths),
            None,
            &mut script,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("--hostname"), "{err}");
    }

    #[test]
    fn the_instructions_name_the_port_and_what_to_copy() {
        let text = instructions(9000);
        for part in [
            "Networks ▸ Tunnels",
            "Cloudflared",
            "http://127.0.0.1:9000",
            "eyJ",
            "Public Hostname",
            "on Cloudflare",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(next_steps("a.example.com", 8765).contains("`chroxy start --tunnel named`"));
        assert!(next_steps("a.example.com", 9000).contains("--tunnel named --port 9000"));
    }
}
