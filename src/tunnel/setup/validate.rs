//! What a person types or pastes into `chroxy tunnel setup`, checked before anything is
//! written: a hostname is a bare DNS name (cloudflared and the pairing link build
//! `https://<it>`, so a scheme, path or port in it would make an address that never
//! answers), and a token is what the Cloudflare dashboard hands out (anything else
//! would be stored, then fail only at the next `chroxy start`, far from the paste).

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// Why what was given is not a hostname. Each names the input (a hostname is public)
/// and says what is wanted instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    /// Nothing was given.
    #[error("no hostname given; give the Public Hostname you added to the tunnel, e.g. chroxy.example.com")]
    Empty,
    /// A scheme other than http(s).
    #[error("{input:?} is not a hostname: it starts with `{scheme}://`; give only the name, e.g. chroxy.example.com")]
    Scheme {
        /// What was given.
        input: String,
        /// The scheme.
        scheme: String,
    },
    /// Something after the name (`/path`, `?query`).
    #[error("{input:?} is not a hostname: it has a path ({rest:?}); give only the name, e.g. chroxy.example.com")]
    Path {
        /// What was given.
        input: String,
        /// From the first `/`, `?` or `#`.
        rest: String,
    },
    /// `:port` (Cloudflare serves the hostname on 443; the local port goes in the
    /// Public Hostname's service, not here).
    #[error("{input:?} is not a hostname: it has a port; Cloudflare serves it on https (443) and the local port belongs in the Public Hostname's service (http://127.0.0.1:<port>), so give only the name, e.g. chroxy.example.com")]
    Port {
        /// What was given.
        input: String,
    },
    /// Whitespace inside.
    #[error(
        "{input:?} is not a hostname: it contains a space; give one name, e.g. chroxy.example.com"
    )]
    Space {
        /// What was given.
        input: String,
    },
    /// A single label (`localhost`, `chroxy`).
    #[error("{input:?} is not a public hostname: it has no dot; give the full name on your Cloudflare domain, e.g. chroxy.example.com")]
    NoDot {
        /// What was given.
        input: String,
    },
    /// An IP address rather than a name.
    #[error("{input:?} is an IP address; a named tunnel needs a hostname on your Cloudflare domain, e.g. chroxy.example.com")]
    Address {
        /// What was given.
        input: String,
    },
    /// A label that DNS does not allow.
    #[error("{input:?} is not a hostname: {why}")]
    Label {
        /// What was given.
        input: String,
        /// Which label, and what is wrong with it.
        why: String,
    },
}

/// A checked hostname, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname {
    /// The bare name.
    pub name: String,
    /// What was taken off a pasted URL (`https://`, a trailing `/`), to be told.
    pub stripped: Option<String>,
}

/// Checks `input` as a hostname. A pasted `https://chroxy.example.com/` is taken as
/// `chroxy.example.com` (and `stripped` says so); anything else that is not a bare
/// name is refused, naming what is wrong.
pub fn parse_hostname(input: &str) -> Result<Hostname, HostnameError> {
    let given = input.trim();
    let owned = || given.to_owned();
    if given.is_empty() {
        return Err(HostnameError::Empty);
    }
    let mut stripped = Vec::new();
    let mut name = given;
    if let Some((scheme, rest)) = given.split_once("://") {
        if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
            return Err(HostnameError::Scheme {
                input: owned(),
                scheme: scheme.to_owned(),
            });
        }
        stripped.push(format!("`{scheme}://`"));
        name = rest;
        // Only a URL's bare trailing slash goes: `/path` is still refused below.
        if let Some(bare) = name.strip_suffix('/') {
            if !bare.contains('/') {
                stripped.push("the trailing `/`".to_owned());
                name = bare;
            }
        }
    }
    if name.chars().any(char::is_whitespace) {
        return Err(HostnameError::Space { input: owned() });
    }
    if let Some(at) = name.find(['/', '?', '#']) {
        return Err(HostnameError::Path {
            input: owned(),
            rest: name[at..].to_owned(),
        });
    }
    if name.contains(':') || name.starts_with('[') {
        return Err(HostnameError::Port { input: owned() });
    }
    let name = name.to_ascii_lowercase();
    if name.len() > 253 {
        return Err(HostnameError::Label {
            input: owned(),
            why: "it is longer than 253 characters".into(),
        });
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(HostnameError::NoDot { input: owned() });
    }
    if labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit())) {
        return Err(HostnameError::Address { input: owned() });
    }
    for label in &labels {
        let why = if label.is_empty() {
            Some("it has an empty label (two dots in a row, or a dot at an end)".to_owned())
        } else if label.len() > 63 {
            Some(format!("the label {label:?} is longer than 63 characters"))
        } else if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            Some(format!(
                "{c:?} is not allowed (letters, digits and hyphens only; write an international name in its xn-- form)"
            ))
        } else if label.starts_with('-') || label.ends_with('-') {
            Some(format!("the label {label:?} starts or ends with a hyphen"))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(HostnameError::Label {
                input: owned(),
                why,
            });
        }
    }
    Ok(Hostname {
        name,
        stripped: (!stripped.is_empty()).then(|| stripped.join(" and ")),
    })
}

/// Why what was entered is not a Cloudflare tunnel token. Never carries the input: a
/// near-miss may still be most of a real secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenShapeError {
    /// Not base64.
    #[error("that is not a Cloudflare tunnel token: it is not base64. {TOKEN_SHAPE}")]
    NotBase64,
    /// base64, but not of a JSON object.
    #[error(
        "that is not a Cloudflare tunnel token: it does not decode to a JSON object. {TOKEN_SHAPE}"
    )]
    NotJson,
    /// A key missing, empty or not a string.
    #[error("that is not a Cloudflare tunnel token: its `{0}` is missing or empty. {TOKEN_SHAPE}")]
    Missing(&'static str),
    /// `t` is not a UUID.
    #[error(
        "that is not a Cloudflare tunnel token: its tunnel id (`t`) is not a UUID. {TOKEN_SHAPE}"
    )]
    TunnelId,
}

/// What a token looks like, for every [`TokenShapeError`].
const TOKEN_SHAPE: &str = "Expected the long string (it starts with `eyJ`) that ends the install command the Cloudflare dashboard shows for the tunnel: base64 of {\"a\": account tag, \"t\": tunnel id, \"s\": secret}. Copy it again and paste it alone.";

/// The token in `entered`: a Cloudflare tunnel token on its own, or the dashboard's
/// whole install command (`sudo cloudflared service install <token>`, `… run --token
/// <token>`), whose last word is then the token (`true`: taken from a command).
pub fn parse_token(entered: &str) -> Result<(String, bool), TokenShapeError> {
    let entered = entered.trim();
    match entered.split_whitespace().collect::<Vec<_>>()[..] {
        [] => Err(TokenShapeError::NotBase64),
        [alone] => check_token_shape(alone).map(|()| (alone.to_owned(), false)),
        [.., last] => {
            // Only a command line: a token with a space pasted into it stays refused.
            if !entered.contains("cloudflared") {
                return Err(TokenShapeError::NotBase64);
            }
            check_token_shape(last).map(|()| (last.to_owned(), true))
        }
    }
}

/// Whether `token` is base64 of a JSON object with a non-empty `a` (account tag), a
/// UUID `t` (tunnel id) and a non-empty `s` (secret): what cloudflared accepts in
/// `TUNNEL_TOKEN`.
pub fn check_token_shape(token: &str) -> Result<(), TokenShapeError> {
    let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(token).ok())
        .ok_or(TokenShapeError::NotBase64)?;
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenShapeError::NotJson)?;
    let field = |key: &'static str| {
        object
            .get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|v| !v.trim().is_empty())
            .ok_or(TokenShapeError::Missing(key))
    };
    field("a")?;
    field("s")?;
    uuid::Uuid::parse_str(field("t")?).map_err(|_| TokenShapeError::TunnelId)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token of the right shape, as the dashboard makes them.
    fn token(json: &str) -> String {
        STANDARD.encode(json)
    }

    const GOOD: &str = r#"{"a":"0123456789abcdef0123456789abcdef","t":"6ff42ae2-765d-4adf-8112-31c55c1551ef","s":"c2VjcmV0LXNlY3JldC1zZWNyZXQ="}"#;

    #[test]
    fn a_bare_name_is_kept_lower_cased_and_a_pasted_url_is_stripped_and_told() {
        let h = parse_hostname("  Chroxy.Example.com \n").unwrap();
        assert_eq!(h.name, "chroxy.example.com");
        assert_eq!(h.stripped, None);
        let h = parse_hostname("https://chroxy.example.com/").unwrap();
        assert_eq!(h.name, "chroxy.example.com");
        assert_eq!(
            h.stripped.as_deref(),
            Some("`https://` and the trailing `/`")
        );
        assert_eq!(
            parse_hostname("HTTP://a-b.c9.example.co.uk").unwrap().name,
            "a-b.c9.example.co.uk"
        );
    }

    #[test]
    fn anything_but_a_bare_name_is_refused_naming_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("", "no hostname given"),
            ("https://chroxy.example.com/pair", "has a path (\"/pair\")"),
            ("chroxy.example.com/", "has a path"),
            ("chroxy.example.com?x=1", "has a path"),
            ("chroxy example.com", "contains a space"),
            ("https://chroxy .example.com", "contains a space"),
            ("chroxy.example.com:8765", "has a port"),
            ("https://chroxy.example.com:443/", "has a port"),
            ("localhost", "has no dot"),
            ("192.168.1.20", "IP address"),
            ("ftp://chroxy.example.com", "starts with `ftp://`"),
            ("chroxy..example.com", "empty label"),
            ("chroxy.example.com.", "empty label"),
            ("-chroxy.example.com", "hyphen"),
            ("chroxy_x.example.com", "'_' is not allowed"),
            ("chröxy.example.com", "xn--"),
        ];
        for (input, says) in cases {
            let err = parse_hostname(input).unwrap_err().to_string();
            assert!(err.contains(says), "{input:?}: {err}");
            assert!(
                err.contains("e.g. chroxy.example.com") || err.contains("is not a hostname"),
                "{input:?} says what is wanted: {err}"
            );
        }
        let long = format!("{}.example.com", "a".repeat(64));
        assert!(parse_hostname(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than 63"));
    }

    #[test]
    fn a_dashboard_token_passes_and_every_other_shape_is_refused_without_echoing_it() {
        let good = token(GOOD);
        assert_eq!(check_token_shape(&good), Ok(()));
        assert_eq!(check_token_shape(good.trim_end_matches('=')), Ok(()));
        let wrong = [
            ("not a token at all!", TokenShapeError::NotBase64),
            ("c2VjcmV0", TokenShapeError::NotJson),
            (
                &token(r#"{"a":"x","s":"y"}"#) as &str,
                TokenShapeError::Missing("t"),
            ),
            (
                &token(r#"{"t":"6ff42ae2-765d-4adf-8112-31c55c1551ef","s":"y"}"#),
                TokenShapeError::Missing("a"),
            ),
            (
                &token(r#"{"a":"x","t":"6ff42ae2-765d-4adf-8112-31c55c1551ef","s":""}"#),
                TokenShapeError::Missing("s"),
            ),
            (
                &token(r#"{"a":"x","t":"tunnel-1","s":"y"}"#),
                TokenShapeError::TunnelId,
            ),
            (&token("[1,2]"), TokenShapeError::NotJson),
        ];
        for (input, want) in wrong {
            let err = check_token_shape(input).unwrap_err();
            assert_eq!(err, want, "{input}");
            let text = err.to_string();
            assert!(!text.contains(input), "the input was echoed: {text}");
            assert!(text.contains("eyJ") && text.contains("\"t\""), "{text}");
        }
    }

    #[test]
    fn a_pasted_install_command_yields_its_token_and_a_token_with_a_space_does_not() {
        let good = token(GOOD);
        assert_eq!(
            parse_token(&format!(" {good}\n")),
            Ok((good.clone(), false))
        );
        assert_eq!(
            parse_token(&format!("sudo cloudflared service install {good}")),
            Ok((good.clone(), true))
        );
        assert_eq!(
            parse_token(&format!("cloudflared tunnel run --token {good}")),
            Ok((good.clone(), true))
        );
        let (head, tail) = good.split_at(20);
        assert_eq!(
            parse_token(&format!("{head} {tail}")),
            Err(TokenShapeError::NotBase64)
        );
        assert!(parse_token("sudo cloudflared service install").is_err());
    }
}
