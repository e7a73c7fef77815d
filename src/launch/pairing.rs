//! The pairing a phone needs from a started supervisor: followed as the tunnel's URL or
//! the token changes ([`follow_pairing`], for every view), and printed to a terminal
//! ([`print_pairing`], for `chroxy start`).

use std::io::Write;

use tokio::sync::watch;

use crate::pairing::Pairing;
use crate::secrets::{ApiToken, Secrets};
use crate::supervisor::handle::Handle;
use crate::supervisor::status::Status;

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
    let rotations = |s: &Status| {
        s.events
            .iter()
            .rev()
            .find(|e| e.kind == "token_rotated")
            .map(|e| e.at)
    };
    tokio::spawn(async move {
        let mut status = handle.watch();
        let mut rotated = rotations(&status.borrow());
        let mut sent: Option<(String, ApiToken)> = None;
        loop {
            let (url, port, mode, now_rotated) = {
                let s = status.borrow_and_update();
                (
                    s.tunnel.url.clone(),
                    s.public_port,
                    s.tunnel.mode.clone(),
                    rotations(&s),
                )
            };
            if now_rotated != rotated {
                rotated = now_rotated;
                if let Some(secrets) = secrets.clone() {
                    if let Ok(Ok(new)) =
                        tokio::task::spawn_blocking(move || secrets.api_token()).await
                    {
                        token = new;
                    }
                }
            }
            let usable = url.is_some() || mode == "none";
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
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

/// Writes the QR code and the link a phone scans, now and whenever they change (a new
/// tunnel URL, a rotated token), until the pairing's sender is gone. Only for a
/// terminal: the link holds the token, and a file or a pipe is where logs are kept.
pub async fn print_pairing(mut pairing: watch::Receiver<Option<Pairing>>, mut out: impl Write) {
    let mut printed: Option<String> = None;
    loop {
        let current = pairing.borrow_and_update().clone();
        if let Some(p) = current {
            let link = p.link();
            if printed.as_ref() != Some(&link) {
                if let Ok(qr) = p.terminal() {
                    let _ = writeln!(out, "{qr}");
                }
                let _ = writeln!(out, "Scan the code with your phone, or open {link}");
                let _ = out.flush();
                printed = Some(link);
            }
        }
        if pairing.changed().await.is_err() {
            return;
        }
    }
}
