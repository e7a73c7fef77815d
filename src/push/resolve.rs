//! Push services' names, resolved for the supervisor's HTTP client, keeping only the
//! addresses a push may go to. A phone names its endpoint; checking the name's text
//! (as [`super::store`] does) cannot see a name whose DNS points into the owner's
//! network (`push.attacker.example` → `169.254.169.254`), so the check is repeated on
//! what the name resolves to, at the moment of connecting: no later answer of the DNS
//! can slip another address in between.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};

use super::store::{reachable, Reach};

/// The system's resolver, less the addresses [`Reach`] does not allow.
#[derive(Clone)]
pub struct PublicOnly {
    inner: GaiResolver,
    reach: Reach,
}

impl PublicOnly {
    pub fn new(reach: Reach) -> Self {
        Self {
            inner: GaiResolver::new(),
            reach,
        }
    }
}

impl tower_service::Service<Name> for PublicOnly {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let reach = self.reach;
        let resolving = self.inner.call(name);
        Box::pin(async move {
            let kept: Vec<SocketAddr> = resolving
                .await?
                .filter(|addr| reachable(addr.ip(), reach))
                .collect();
            if kept.is_empty() {
                return Err(std::io::Error::other(
                    "the push service's name resolves only to this machine or private addresses",
                ));
            }
            Ok(kept.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service;

    async fn resolve(reach: Reach, name: &str) -> std::io::Result<Vec<SocketAddr>> {
        let mut resolver = PublicOnly::new(reach);
        std::future::poll_fn(|cx| resolver.poll_ready(cx)).await?;
        Ok(resolver.call(name.parse().unwrap()).await?.collect())
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_this_machine_is_no_push_service() {
        // `localhost` is the one name every machine resolves offline, to loopback.
        let err = resolve(Reach::Public, "localhost").await.unwrap_err();
        assert!(err.to_string().contains("private addresses"), "{err}");
        let kept = resolve(Reach::AlsoLoopback, "localhost").await.unwrap();
        assert!(!kept.is_empty() && kept.iter().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn private_and_link_local_answers_are_dropped_public_ones_kept() {
        for ip in [
            "169.254.169.254",
            "10.0.0.1",
            "192.168.1.20",
            "100.64.0.1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!reachable(ip.parse().unwrap(), Reach::AlsoLoopback), "{ip}");
        }
        for ip in ["142.250.74.110", "2a00:1450:4001::200e"] {
            assert!(reachable(ip.parse().unwrap(), Reach::Public), "{ip}");
        }
        assert!(!reachable("127.0.0.1".parse().unwrap(), Reach::Public));
        assert!(!reachable("::1".parse().unwrap(), Reach::Public));
    }
}
