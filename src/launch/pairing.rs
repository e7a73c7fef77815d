//! The pairing a phone needs from a started supervisor: followed as the tunnel's URL or
//! the token changes ([`follow_pairing`], for every view), and printed to a terminal
//! ([`print_pairing`], for `chroxy start`).

use std::io::Write;

use tokio::sync::watch;

use crate::devices::Devices;
use crate::pairing::Pairing;
use crate::secrets::Secrets;
use crate::supervisor::handle::Handle;
use crate::token::ApiToken;
use crate::tunnel::TunnelMode;

/// The pairing phones need, now and after every change of the tunnel's URL or of the
/// token (`chroxy token rotate` makes the old link dead). With a tunnel, only its URL
/// reaches a phone elsewhere, so until it has one the pairing is `None`.
pub fn follow_pairing(
    handle: Handle,
    mut token: ApiToken,
    secrets: Option<Secrets>,
    configured: Option<String>,
) -> watch::Receiver<Option<Pairing>> {
    let (tx, rx) = watch::channel(None);
    let mut status = handle.watch();
    let mut reloads = handle.token_reloads();
    tokio::spawn(async move {
        let mut sent: Option<(String, ApiToken)> = None;
        let mut reloaded = false;
        loop {
            let (url, port, mode) = {
                let s = status.borrow_and_update();
                (s.tunnel.url.clone(), s.public_port, s.tunnel.mode)
            };
            if std::mem::take(&mut reloaded) {
                if let Some(secrets) = secrets.clone() {
                    if let Ok(Ok(new)) =
                        tokio::task::spawn_blocking(move || secrets.api_token()).await
                    {
                        token = new;
                    }
                }
            }
            let usable = url.is_some() || mode == TunnelMode::None;
            let public = crate::pairing::public_url(url.as_deref(), configured.as_deref(), port);
            let next = usable.then(|| (public, token.clone()));
            if next != sent {
                let pairing = next.as_ref().and_then(|(public, token)| {
                    Pairing::new(public, token.clone())
                        .map_err(|err| tracing::error!(%err, "cannot make a pairing link"))
                        .ok()
                });
                sent = next;
                tx.send_replace(pairing);
            }
            tokio::select! {
                changed = status.changed() => if changed.is_err() { return },
                changed = reloads.changed() => match changed {
                    Ok(()) => reloaded = true,
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

/// Said under every QR a terminal shows.
const PAIRING_CODE_NOTE: &str = "The code pairs one phone, within 10 minutes; `chroxy pair --format terminal` shows a fresh one. A phone without it waits for your approval (`chroxy devices`).";

/// Writes the QR code and the link a phone scans, now and whenever they change (a new
/// tunnel URL, a rotated token), until the pairing's sender is gone. Only for a
/// terminal: the link holds the token, and a file or a pipe is where logs are kept.
pub async fn print_pairing(
    mut pairing: watch::Receiver<Option<Pairing>>,
    devices: Devices,
    mut out: impl Write,
) {
    let mut printed: Option<String> = None;
    loop {
        let current = pairing.borrow_and_update().clone();
        if let Some(p) = current {
            let link = p.link();
            if printed.as_ref() != Some(&link) {
                match p.with_fresh_code(&devices, crate::protocol::now_ms()) {
                    Ok(shown) => {
                        if let Ok(qr) = shown.terminal() {
                            let _ = writeln!(out, "{qr}");
                        }
                        let _ = writeln!(
                            out,
                            "Scan the code with your phone, or open {}",
                            shown.link()
                        );
                        let _ = writeln!(out, "{PAIRING_CODE_NOTE}");
                    }
                    Err(err) => {
                        let _ = writeln!(out, "cannot show a pairing code: {err}");
                    }
                }
                let _ = out.flush();
                printed = Some(link);
            }
        }
        if pairing.changed().await.is_err() {
            return;
        }
    }
}
