//! `chroxy doctor`: checks what Chroxy needs on this machine and says, for each thing
//! that is wrong, how to fix it. The same checks can feed the tray window.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::secrets::{Backend, Secrets};
use crate::store::Paths;
use crate::supervisor::instance;
use crate::tunnel::TunnelChoice;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Ok,
    /// Works, but not as well as it could.
    Warn,
    /// Chroxy cannot work like this.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it came out.
    pub verdict: Verdict,
    /// What was found, and (unless ok) what to do about it.
    pub detail: String,
}

/// What the checks look at.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The home's paths.
    pub paths: Paths,
    /// `CHROXY_CLAUDE` or the config's `claude`.
    pub claude: Option<PathBuf>,
    /// `CHROXY_CLOUDFLARED`.
    pub cloudflared: Option<PathBuf>,
    /// The ports `chroxy start` would take.
    pub ports: [u16; 2],
    /// `[tunnel] public_url`: where pairing links point without a tunnel.
    pub public_url: Option<String>,
    /// `[tunnel] hostname`: a named tunnel's address.
    pub hostname: Option<String>,
    /// `[security] allow_token_auth`.
    pub allow_token_auth: bool,
    /// `ANTHROPIC_API_KEY` is set: Claude Code bills that key rather than a login.
    pub api_key: bool,
}

/// Why `chroxy doctor` failed.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// The config file is unreadable or invalid (it names `claude`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Some checks failed; the report says how to fix each.
    #[error("{0} check(s) failed; see above for how to fix each")]
    Failed(usize),
    /// The report could not be written.
    #[error(transparent)]
    Output(#[from] std::io::Error),
}

impl Inputs {
    /// What `chroxy doctor` checks: this home, the programs the environment and the
    /// config name, and `ports`.
    pub fn resolve(paths: &Paths, ports: [u16; 2]) -> Result<Self, ConfigError> {
        let config = Config::load(&paths.config_file())?;
        Ok(Self {
            paths: paths.clone(),
            claude: crate::environment::claude_binary(&config.worker),
            cloudflared: crate::environment::cloudflared_binary(),
            ports,
            public_url: config.tunnel.public_url.clone(),
            hostname: config.tunnel.hostname.clone(),
            allow_token_auth: config.security.allow_token_auth,
            api_key: std::env::var_os("ANTHROPIC_API_KEY").is_some_and(|k| !k.is_empty()),
        })
    }
}

/// `chroxy doctor`: runs every check and writes a line for each (blocking); fails when
/// any check failed.
pub fn report(inputs: &Inputs, secrets: &Secrets, out: &mut impl Write) -> Result<(), DoctorError> {
    let checks = run(inputs, secrets);
    for c in &checks {
        let mark = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        writeln!(out, "{mark} {:<12} {}", c.name, c.detail)?;
    }
    match checks.iter().filter(|c| c.verdict == Verdict::Fail).count() {
        0 => Ok(()),
        failed => Err(DoctorError::Failed(failed)),
    }
}

/// Runs every check (blocking: it runs `--version`s and may ask the keyring).
pub fn run(inputs: &Inputs, secrets: &Secrets) -> Vec<Check> {
    let running = instance::running(&inputs.paths);
    vec![
        claude(inputs.claude.as_deref()),
        cloudflared(inputs.cloudflared.as_deref()),
        keyring(secrets),
        identity(secrets),
        encryption(inputs),
        billing(inputs),
        address(crate::desktop::Settings::load(&inputs.paths).tunnel),
        named_tunnel(
            inputs.hostname.as_deref(),
            secrets.tunnel_token().map(|t| t.is_some()),
        ),
        tray(crate::desktop::tray_host::probe()),
        writable(&inputs.paths),
        ports(inputs.ports, running.as_ref()),
        match &running {
            Some(info) => Check {
                name: "running",
                verdict: Verdict::Ok,
                detail: format!(
                    "a supervisor runs: {} (`chroxy status` shows its health)",
                    instance::describe(info)
                ),
            },
            None => Check {
                name: "running",
                verdict: Verdict::Ok,
                detail: "no supervisor runs for this home (start one with `chroxy start`)".into(),
            },
        },
    ]
}

fn claude(configured: Option<&Path>) -> Check {
    let name = "claude";
    match crate::agent::find_claude(configured) {
        Ok(path) => match version(&path) {
            Some(v) => ok(name, format!("{} ({v})", path.display())),
            None => Check {
                name,
                verdict: Verdict::Fail,
                detail: format!(
                    "{} does not answer `--version`; reinstall it: {}",
                    path.display(),
                    crate::agent::INSTALL_HINT
                ),
            },
        },
        Err(e) => fail(name, e.to_string()),
    }
}

fn cloudflared(configured: Option<&Path>) -> Check {
    let name = "cloudflared";
    match crate::tunnel::Program::Cloudflared.find(configured) {
        Ok(path) => ok(
            name,
            format!(
                "{} ({})",
                path.display(),
                version(&path).unwrap_or_else(|| "version unknown".into())
            ),
        ),
        Err(e) => fail(
            name,
            format!("{e}; without it phones reach this machine only on the local network"),
        ),
    }
}

fn keyring(secrets: &Secrets) -> Check {
    match secrets.backend() {
        Backend::Keyring(service) => ok(
            "secrets",
            format!("kept in the OS keyring (service `{service}`)"),
        ),
        Backend::File(why) => Check {
            name: "secrets",
            verdict: Verdict::Warn,
            detail: format!(
                "no usable OS keyring ({why}): tokens are kept in 0600 files in the config directory; run Chroxy in a desktop session with a Secret Service (e.g. gnome-keyring) to use the keyring"
            ),
        },
    }
}

/// The desktop's key, as a person compares it with what the phone shows.
fn identity(secrets: &Secrets) -> Check {
    match secrets.identity() {
        Ok(key) => ok(
            "identity",
            format!(
                "this machine's key is {}: a paired phone shows the same under ⋯, and talks to it end-to-end encrypted",
                key.fingerprint()
            ),
        ),
        Err(e) => fail("identity", e.to_string()),
    }
}

/// Whether phones talk to this machine end to end encrypted, and can at the address
/// pairing links name when no tunnel runs.
fn encryption(inputs: &Inputs) -> Check {
    let name = "encryption";
    if inputs.allow_token_auth {
        return Check {
            name,
            verdict: Verdict::Warn,
            detail: "`[security] allow_token_auth = true`: phones may also connect with the token, which the tunnel then sees; what they say is hidden only from a tunnel that merely records (Chroxy's own clients' envelope) or not at all (other v1 clients)".into(),
        };
    }
    let lan = inputs
        .public_url
        .as_deref()
        .filter(|url| crate::pairing::url_is_encryptable(url) == Ok(false));
    match lan {
        Some(url) => Check {
            name,
            verdict: Verdict::Warn,
            detail: format!(
                "`[tunnel] public_url` is {url}: {}",
                crate::pairing::UNENCRYPTABLE
            ),
        },
        None => ok(
            name,
            "phones connect end-to-end encrypted (protocol v2)".into(),
        ),
    }
}

/// Which account pays for the turns: the question every subscriber asks first. The
/// agents get this process's environment, so what it holds is what they use.
fn billing(inputs: &Inputs) -> Check {
    let detail = if inputs.api_key {
        "`ANTHROPIC_API_KEY` is set here, so a Chroxy started from this environment has Claude Code bill that key's Anthropic Console account per token (the key takes precedence over a Claude subscription login); the cost the phone shows is what you pay"
    } else {
        "no `ANTHROPIC_API_KEY` here, so a Chroxy started from this environment has Claude Code run on its own login (`claude`, then /login): with a Pro or Max subscription, the `claude -p` turns Chroxy runs count against the plan's usage limits like interactive use (Anthropic's terms as of mid-2026; your plan's usage page has the figures), and the cost the phone shows is what the same tokens would cost on the API, not a bill. Set `ANTHROPIC_API_KEY` to pay per token instead"
    };
    ok("billing", detail.into())
}

fn writable(paths: &Paths) -> Check {
    for dir in [paths.config_dir(), paths.state_dir()] {
        let probe = dir.join(".doctor-probe");
        let result = crate::store::atomic_write(&probe, b"probe");
        let _ = std::fs::remove_file(&probe);
        if let Err(e) = result {
            return fail(
                "files",
                format!("{e}; make the directory writable, or set CHROXY_HOME to one that is"),
            );
        }
    }
    ok(
        "files",
        format!(
            "{} and {} are writable",
            paths.config_dir().display(),
            paths.state_dir().display()
        ),
    )
}

/// Whether the address phones were paired with survives a restart, for the tunnel the
/// tray app will use (the one its menu last chose; `chroxy start`'s default is quick).
fn address(tray: TunnelChoice) -> Check {
    let name = "address";
    match tray {
        TunnelChoice::Quick => Check {
            name,
            verdict: Verdict::Warn,
            detail: "a quick tunnel (the tray app's choice, and `chroxy start`'s default) gets a new address at every start, and every phone must scan again; for one that stays: Tunnel ▸ Tailscale or Named in the tray menu (`--tunnel tailscale` or `--tunnel named` for `chroxy start`), see the README".into(),
        },
        TunnelChoice::Named => ok(name, "the tray app uses your named tunnel: the address stays the same across restarts".into()),
        TunnelChoice::Tailscale => ok(name, "the tray app uses Tailscale: https://<machine>.<tailnet>.ts.net stays the same across restarts".into()),
        TunnelChoice::None => ok(name, "the tray app uses no tunnel: phones reach this machine on its own network only".into()),
    }
}

/// Whether a named tunnel has both halves: the hostname in the config and the token in
/// the keyring. One without the other is a set-up left half done, found here rather
/// than when `--tunnel named` (or the tray's Tunnel ▸ Named) refuses to start.
fn named_tunnel(
    hostname: Option<&str>,
    token_stored: Result<bool, crate::secrets::SecretsError>,
) -> Check {
    let name = "named tunnel";
    let stored = match token_stored {
        Ok(stored) => stored,
        Err(e) => {
            return warn(
                name,
                format!("cannot tell whether a tunnel token is stored: {e}"),
            )
        }
    };
    match (hostname, stored) {
        (Some(host), true) => ok(name, format!("https://{host}, its token stored (`chroxy start --tunnel named`)")),
        (None, false) => ok(name, "none set up (`chroxy tunnel setup` makes one: an address that stays the same)".into()),
        (Some(host), false) => warn(name, format!("`[tunnel] hostname` is {host} but no tunnel token is stored, so `--tunnel named` cannot start: run `chroxy tunnel setup`")),
        (None, true) => warn(name, "a tunnel token is stored but the config has no `[tunnel] hostname`, so `--tunnel named` cannot start: run `chroxy tunnel setup`".into()),
    }
}

fn tray(host: crate::desktop::tray_host::TrayHost) -> Check {
    let (fine, detail) = crate::desktop::tray_host::advice(host);
    Check {
        name: "tray",
        verdict: if fine { Verdict::Ok } else { Verdict::Warn },
        detail: detail.into(),
    }
}

fn ports(ports: [u16; 2], running: Option<&instance::InstanceInfo>) -> Check {
    if let Some(info) = running {
        return ok(
            "ports",
            format!(
                "{} and {} are Chroxy's own (running)",
                info.public_port, info.status_port
            ),
        );
    }
    let taken: Vec<String> = ports
        .iter()
        .filter(|&&p| {
            std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, p))).is_err()
        })
        .map(u16::to_string)
        .collect();
    if taken.is_empty() {
        ok("ports", format!("{} and {} are free", ports[0], ports[1]))
    } else {
        fail(
            "ports",
            format!(
                "port {} is taken by another program; stop it or choose others with `chroxy start --port P --status-port S`",
                taken.join(" and ")
            ),
        )
    }
}

fn ok(name: &'static str, detail: String) -> Check {
    Check {
        name,
        verdict: Verdict::Ok,
        detail,
    }
}

fn warn(name: &'static str, detail: String) -> Check {
    Check {
        name,
        verdict: Verdict::Warn,
        detail,
    }
}

fn fail(name: &'static str, detail: String) -> Check {
    Check {
        name,
        verdict: Verdict::Fail,
        detail,
    }
}

/// The first line of `<binary> --version`, if it answers within a few seconds.
fn version(binary: &Path) -> Option<String> {
    crate::process::version_line(binary, Duration::from_secs(10))
        .ok()
        .filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(public_url: Option<&str>, allow_token_auth: bool) -> Inputs {
        Inputs {
            paths: Paths::under("/nonexistent"),
            claude: None,
            cloudflared: None,
            ports: [0, 0],
            public_url: public_url.map(str::to_owned),
            hostname: None,
            allow_token_auth,
            api_key: false,
        }
    }

    #[test]
    fn only_a_quick_tunnel_is_warned_of_an_address_that_changes_and_told_how_to_keep_one() {
        let quick = address(TunnelChoice::Quick);
        assert_eq!(quick.verdict, Verdict::Warn);
        assert!(
            quick.detail.contains("new address at every start")
                && quick.detail.contains("--tunnel tailscale"),
            "{}",
            quick.detail
        );
        for stays in [
            TunnelChoice::Named,
            TunnelChoice::Tailscale,
            TunnelChoice::None,
        ] {
            assert_eq!(address(stays).verdict, Verdict::Ok, "{stays:?}");
        }
    }

    #[test]
    fn a_named_tunnel_half_set_up_is_warned_of_and_pointed_at_tunnel_setup() {
        let host = named_tunnel(Some("chroxy.example.com"), Ok(false));
        assert_eq!(host.verdict, Verdict::Warn);
        assert!(
            host.detail.contains("chroxy.example.com")
                && host.detail.contains("no tunnel token is stored")
                && host.detail.contains("chroxy tunnel setup"),
            "{}",
            host.detail
        );
        let token = named_tunnel(None, Ok(true));
        assert_eq!(token.verdict, Verdict::Warn);
        assert!(
            token.detail.contains("no `[tunnel] hostname`")
                && token.detail.contains("chroxy tunnel setup"),
            "{}",
            token.detail
        );
        assert_eq!(
            named_tunnel(Some("a.example.com"), Ok(true)).verdict,
            Verdict::Ok
        );
        let none = named_tunnel(None, Ok(false));
        assert_eq!(none.verdict, Verdict::Ok);
        assert!(
            none.detail.contains("chroxy tunnel setup"),
            "{}",
            none.detail
        );
    }

    #[test]
    fn a_desktop_without_tray_icons_is_warned_of_and_told_what_to_install() {
        use crate::desktop::tray_host::TrayHost;
        let absent = tray(TrayHost::Absent);
        assert_eq!(absent.verdict, Verdict::Warn);
        assert!(absent.detail.contains("AppIndicator"), "{}", absent.detail);
        assert_eq!(tray(TrayHost::Present).verdict, Verdict::Ok);
        assert_eq!(tray(TrayHost::Unknown).verdict, Verdict::Ok);
    }

    #[test]
    fn billing_names_the_account_that_pays() {
        let login = billing(&inputs(None, false));
        assert!(login.detail.contains("usage limits"), "{}", login.detail);
        assert!(login.detail.contains("not a bill"), "{}", login.detail);
        let key = billing(&Inputs {
            api_key: true,
            ..inputs(None, false)
        });
        assert!(key.detail.contains("per token"), "{}", key.detail);
        assert!(key.detail.contains("is what you pay"), "{}", key.detail);
    }

    #[test]
    fn a_plain_lan_address_without_tokens_is_named_as_unusable() {
        let lan = encryption(&inputs(Some("http://192.168.1.20:8765"), false));
        assert_eq!(lan.verdict, Verdict::Warn);
        assert!(
            lan.detail.contains("http://192.168.1.20:8765"),
            "{}",
            lan.detail
        );
        assert!(lan.detail.contains("--tunnel quick"), "{}", lan.detail);
        for fine in [
            None,
            Some("https://chroxy.example.com"),
            Some("http://127.0.0.1:8765"),
        ] {
            assert_eq!(
                encryption(&inputs(fine, false)).verdict,
                Verdict::Ok,
                "{fine:?}"
            );
        }
        let tokens = encryption(&inputs(Some("http://192.168.1.20:8765"), true));
        assert_eq!(tokens.verdict, Verdict::Warn);
        assert!(
            tokens.detail.contains("the tunnel then sees"),
            "{}",
            tokens.detail
        );
    }
}
