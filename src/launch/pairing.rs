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
/// reaches a phone elsewhere, so until it has one the pairing is `None`. `key`: the
/// desktop's public key; `with_token`: `[security] allow_token_auth`.
pub fn follow_pairing(
    handle: Handle,
    mut token: ApiToken,
    secrets: Option<Secrets>,
    configured: Option<String>,
    key: [u8; 32],
    with_token: bool,
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
                    Pairing::new(public, token.clone(), key)
                        .map(|p| p.allowing_tokens(with_token))
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
                        if !shown.usable_by_browsers() {
                            let _ = writeln!(out, "{}", crate::pairing::UNENCRYPTABLE);
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Paths;
    use crate::supervisor::handle::{ActionError, Request};
    use crate::supervisor::status::{Action, Status};

    fn home() -> (tempfile::TempDir, Secrets) {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::files(&Paths::under(dir.path()));
        (dir, secrets)
    }

    /// A supervisor that answers every action with `answer` (and its status, which
    /// must outlive the test: the pairing stops with it).
    fn handle(answer: Result<String, ActionError>) -> (Handle, watch::Sender<Status>) {
        let (publish, status) = watch::channel(Status::new(8765, 8766, false, "file"));
        let (actions, mut requests) = tokio::sync::mpsc::channel::<Request>(4);
        tokio::spawn(async move {
            while let Some(Request { reply, .. }) = requests.recv().await {
                let _ = reply.send(answer.clone());
            }
        });
        (Handle::new(status, actions), publish)
    }

    fn token_of(pairing: &Pairing) -> String {
        crate::pairing::decode_link(&pairing.link())
            .and_then(|p| p.token)
            .unwrap()
    }

    async fn next_token(pairing: &mut watch::Receiver<Option<Pairing>>) -> String {
        let shown = tokio::time::timeout(std::time::Duration::from_secs(5), pairing.changed())
            .await
            .expect("the pairing did not change");
        shown.unwrap();
        token_of(pairing.borrow_and_update().as_ref().unwrap())
    }

    #[tokio::test]
    async fn the_pairing_takes_the_rotated_token_once_the_supervisor_has_reloaded_it() {
        let (_dir, secrets) = home();
        let old = secrets.api_token().unwrap();
        let (handle, _status) = handle(Ok("restarting the worker with the new token".into()));
        let mut pairing = follow_pairing(
            handle.clone(),
            old.clone(),
            Some(secrets.clone()),
            None,
            [1; 32],
            true,
        );
        assert_eq!(next_token(&mut pairing).await, old.expose());

        let new = secrets.rotate_api_token().unwrap();
        handle.act(Action::ReloadToken).await.unwrap();
        assert_eq!(next_token(&mut pairing).await, new.expose());
    }

    #[tokio::test]
    async fn a_refused_reload_leaves_the_pairing_alone() {
        let (_dir, secrets) = home();
        let old = secrets.api_token().unwrap();
        let (handle, _status) = handle(Err(ActionError::Refused("given in CHROXY_TOKEN".into())));
        let mut pairing = follow_pairing(
            handle.clone(),
            old.clone(),
            Some(secrets.clone()),
            None,
            [1; 32],
            true,
        );
        assert_eq!(next_token(&mut pairing).await, old.expose());

        secrets.rotate_api_token().unwrap();
        handle.act(Action::ReloadToken).await.unwrap_err();
        assert_eq!(*handle.token_reloads().borrow(), 0, "no reload was counted");
        tokio::task::yield_now().await;
        assert!(!pairing.has_changed().unwrap());
        assert_eq!(
            token_of(pairing.borrow().as_ref().unwrap()),
            old.expose(),
            "the workers still take the old token, so the link keeps it"
        );
    }
}
