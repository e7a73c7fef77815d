//! Headless Chromium driven through chromedriver (fantoccini), at a phone's 390×844,
//! with a fresh profile per browser (or any WebDriver session, like the tray app's), screenshots into `target/test-output/<suite>/`,
//! and the browser's console log for "no errors" checks.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::process::Command;

use super::WAIT;

/// One chromedriver; each [`Browser`] is a session of its own (own profile).
pub struct Driver {
    _child: super::Group,
    port: u16,
    /// chromedriver's and Chromium's home: what they write outside a profile (crash
    /// reports, caches) stays out of the real one.
    _home: TempDir,
}

impl Driver {
    pub async fn start() -> Self {
        let driver = which::which("chromedriver").expect(
            "chromedriver is missing: run ./scripts/test, which installs chromium and chromium-driver",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let home = tempfile::tempdir().unwrap();
        let child = super::Group::spawn(
            Command::new(driver)
                .arg(format!("--port={port}"))
                .env("HOME", home.path())
                .env("XDG_CONFIG_HOME", home.path().join(".config"))
                .env("XDG_CACHE_HOME", home.path().join(".cache"))
                .env("XDG_DATA_HOME", home.path().join(".local/share"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        super::eventually("chromedriver listens", async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await
        })
        .await;
        Self {
            _child: child,
            port,
            _home: home,
        }
    }

    pub async fn browser(&self, shots: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let chromium = which::which("chromium").expect("chromium is missing: run ./scripts/test");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                // A phone's viewport, exactly: 390×844 CSS pixels at 1 pixel each.
                "mobileEmulation": {"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 1.0, "touch": true}},
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let mut browser = Browser::connect(self.port, caps, shots, Some((390, 844))).await;
        browser._profile = Some(profile);
        browser
    }
}

pub struct Browser {
    pub client: Client,
    _profile: Option<TempDir>,
    shots: PathBuf,
    /// What every screenshot must measure, if anything.
    size: Option<(u32, u32)>,
}

/// A chromedriver endpoint beyond the WebDriver standard: `POST session/<id>/<path>`.
#[derive(Debug)]
struct DriverCommand {
    path: &'static str,
    body: Value,
}

impl WebDriverCompatibleCommand for DriverCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (hyper::Method, Option<String>) {
        (hyper::Method::POST, Some(self.body.to_string()))
    }
}

impl Browser {
    /// A WebDriver session at `port` (chromedriver, tauri-driver) with `caps`;
    /// screenshots go to `target/test-output/<shots>/`.
    pub async fn connect(
        port: u16,
        caps: serde_json::Map<String, Value>,
        shots: &str,
        size: Option<(u32, u32)>,
    ) -> Self {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        let dir = super::repo_root().join("target/test-output").join(shots);
        std::fs::create_dir_all(&dir).unwrap();
        Browser {
            client,
            _profile: None,
            shots: dir,
            size,
        }
    }

    /// Makes the page see `prefers-color-scheme: dark` (or light).
    pub async fn color_scheme(&self, scheme: &str) {
        self.devtools(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await;
    }

    /// A Chrome DevTools Protocol command, through chromedriver; its result.
    pub async fn devtools(&self, cmd: &str, params: Value) -> Value {
        let cmd = DriverCommand {
            path: "goog/cdp/execute",
            body: json!({"cmd": cmd, "params": params}),
        };
        self.client
            .issue_cmd(cmd)
            .await
            .unwrap_or_else(|e| panic!("DevTools refused: {e}"))
    }

    /// Evaluates `script` (a function body whose last argument is the callback to
    /// call with the result) in the page, waiting for it.
    pub async fn js_async(&self, script: &str) -> Value {
        self.client.execute_async(script, vec![]).await.unwrap()
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Evaluates `script` (a function body) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits until `script` returns true.
    pub async fn until(&self, what: &str, script: &str) {
        self.until_within(what, script, WAIT).await;
    }

    /// [`until`](Self::until) for things that take longer by design.
    pub async fn until_within(&self, what: &str, script: &str, wait: Duration) {
        super::eventually_within(&format!("in the page: {what}"), wait, async || {
            if self.js(script).await == Value::Bool(true) {
                return Ok(());
            }
            let text = self.js("return document.body.innerText").await;
            Err(format!("page text: {text}"))
        })
        .await;
    }

    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` in the page: {e}"))
    }

    /// Clicks the element `css` finds. The page may draw that element anew between the
    /// find and the click (a list redrawn when a device connects): then it is found
    /// again, as a person's second tap would, until [`WAIT`] runs out.
    pub async fn click(&self, css: &str) {
        super::eventually(&format!("`{css}` clicked"), async || {
            match self.find(css).await.click().await {
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                {
                    Err(e.to_string())
                }
                done => {
                    done.unwrap_or_else(|e| panic!("clicking `{css}` failed: {e}"));
                    Ok(())
                }
            }
        })
        .await;
    }

    /// Waits for a prompt button labelled `label`, then clicks it.
    pub async fn click_prompt_button(&self, label: &str) {
        let find = format!(
            "[...document.querySelectorAll('#prompts button')].find(b => b.textContent === {})",
            Value::String(label.into())
        );
        self.until(&format!("a `{label}` button"), &format!("return !!{find}"))
            .await;
        self.js(&format!("{find}.click(); return true")).await;
    }

    /// Sets a `<select>` as a user would (value, then `change`).
    pub async fn choose(&self, select_id: &str, value: &str) {
        self.js(&format!(
            "const s = document.getElementById({}); s.value = {}; s.dispatchEvent(new Event('change')); return true",
            Value::String(select_id.into()),
            Value::String(value.into())
        ))
        .await;
    }

    /// Types into the composer and sends.
    pub async fn say(&self, text: &str) {
        let input = self.find("#input").await;
        input.send_keys(text).await.unwrap();
        self.click("#send").await;
    }

    /// Saves a screenshot and checks it shows something (not one flat colour); returns
    /// the PNG.
    pub async fn shot(&self, name: &str) -> Vec<u8> {
        let png = self.client.screenshot().await.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(&png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let frame = reader.next_frame(&mut buf).unwrap();
        let pixels = &buf[..frame.buffer_size()];
        let step = frame.color_type.samples();
        let mut colours = std::collections::HashSet::new();
        for px in pixels.chunks(step).step_by(7) {
            colours.insert(px.to_vec());
            if colours.len() > 16 {
                break;
            }
        }
        assert!(
            colours.len() > 16,
            "screenshot {} is blank ({} colours)",
            path.display(),
            colours.len()
        );
        if let Some(size) = self.size {
            assert_eq!((frame.width, frame.height), size, "not the expected size");
        }
        png
    }

    /// Console entries at error level, except the network errors a deliberate outage
    /// makes the browser itself log (a refused WebSocket, a 503).
    pub async fn console_errors(&self) -> Vec<String> {
        let log = self
            .client
            .issue_cmd(DriverCommand {
                path: "se/log",
                body: json!({"type": "browser"}),
            })
            .await
            .unwrap();
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .filter_map(|e| e["message"].as_str().map(str::to_owned))
            .filter(|m| {
                !(m.contains("WebSocket connection to") || m.contains("Failed to load resource"))
            })
            .collect()
    }
}
