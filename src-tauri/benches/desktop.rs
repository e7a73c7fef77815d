//! The tray app as a user starts it: launch → QR code visible in the window (started by
//! tauri-driver: the session's creation launches it, and the clock starts there); as
//! Start at login runs it (in the tray, started directly), what it holds in memory with
//! the window never opened, open, and closed again, and Show window (clicked in its
//! menu) → the QR code decoded from the window's pixels; as a user installs it, the
//! packages' sizes and `dpkg -i` of the .deb → the installed app's QR code. The real
//! app on a virtual display, its supervisor and worker inside, `fake-claude` as the
//! agent, no tunnel (the QR code then carries the local URL at once: what is measured is
//! the app, not Cloudflare).
//!
//! `cargo bench -p chroxy-desktop --bench desktop`; `CHROXY_BENCH_QUICK=1` runs once
//! (CI, so it never rots). Every wait is on a condition under a deadline.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::desktop::{app_args, Desk, Driven, TrayMenu};
use common::package;
use common::x11;
use common::{Home, WorkerOpts};

fn main() {
    let quick = std::env::var("CHROXY_BENCH_QUICK").is_ok_and(|v| v == "1");
    let runs = if quick { 1 } else { 5 };
    build_worker_binaries();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let mut to_qr = Vec::new();
    let mut trays = Vec::new();
    let mut install_to_qr = Vec::new();
    let built = runtime.block_on(async {
        for _ in 0..runs {
            to_qr.push(one_start().await);
            trays.push(one_tray().await);
        }
        // The packages of the binaries measured above (debug ones in the quick run).
        let built = package::build(&package::profile()).await;
        for _ in 0..runs {
            install_to_qr.push(one_install(package::deb(&built)).await);
        }
        built
    });
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "chroxy tray app bench — {} run, {cpus} CPUs, took {:.1} s",
        if quick {
            "quick (CHROXY_BENCH_QUICK=1)"
        } else {
            "full"
        },
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>5}",
        "figure", "p50", "p95", "max", "runs"
    );
    row("cold start → QR code visible (ms)", to_qr);
    row(
        "in the tray: Show window → QR code visible (ms)",
        trays.iter().map(|t| t.open_ms).collect(),
    );
    row(
        "  closed, then shown again → QR visible (ms)",
        trays.iter().map(|t| t.reopen_ms).collect(),
    );
    for (state, pick) in [
        ("idle, window never opened", 0),
        ("idle, window open", 1),
        ("idle, window closed again", 2),
    ] {
        println!("RSS {state}:");
        for (i, what) in [
            "  app: tray + supervisor (MB)",
            "  its WebKit processes (MB)",
            "  its worker and standby worker, agent excluded (MB)",
            "  every process it owns, agent excluded (MB)",
        ]
        .iter()
        .enumerate()
        {
            row(what, trays.iter().map(|t| t.rss[pick][i]).collect());
        }
    }
    row("dpkg -i of the .deb → QR code visible (ms)", install_to_qr);
    for path in &built {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        println!(
            "package {:<40} {:>9.1} MB ({} binaries)",
            path.file_name().unwrap().to_string_lossy(),
            size as f64 / 1e6,
            package::profile()
        );
    }
}

/// The app runs `chroxy` (beside it) as its worker, and the agent is `fake-claude`:
/// both made fresh by building the workspace's benches the way this one was built
/// (same profile, same features: nothing is compiled twice, and a `cargo test` /
/// `cargo bench` of the whole workspace finds it all done already).
fn build_worker_binaries() {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    // target/debug holds `cargo test`'s builds; target/release `cargo bench`'s.
    let command = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "test",
        _ => "bench",
    };
    let status = std::process::Command::new(env!("CARGO"))
        .args([command, "--no-run", "--quiet", "--workspace", "--benches"])
        .status()
        .expect("running cargo");
    assert!(status.success(), "building chroxy and fake-claude failed");
}

/// One cold start: milliseconds to the QR code.
async fn one_start() -> f64 {
    let home = Home::new();
    let desk = Desk::start(&home).await;
    let project = home.project();
    let app = desk
        .drive(
            &home,
            &WorkerOpts::fake_cli(),
            &app_args("none", &project),
            "bench-desktop",
        )
        .await;
    until_qr(&app).await.as_secs_f64() * 1000.0
}

/// The app as Start at login runs it: in the tray, window closed.
struct Tray {
    /// Show window → the QR code in the window's pixels.
    open_ms: f64,
    /// The same after closing the window.
    reopen_ms: f64,
    /// RSS (MB) never opened, open, closed again: app, WebKit, workers, all three.
    rss: [[f64; 4]; 3],
}

async fn one_tray() -> Tray {
    let home = Home::new();
    let desk = Desk::start(&home).await;
    let (_app, sup) = desk.at_login(&home, &WorkerOpts::fake_cli()).await;
    // As the app runs by default: a standby worker beside the serving one.
    let ready = sup
        .wait_for("the standby to be ready", |s| s["standby"]["ready"] == true)
        .await;
    let pid = |who: &str| ready[who]["pid"].as_u64().unwrap() as u32;
    let workers = [pid("worker"), pid("standby")];
    let menu = TrayMenu::find(&desk.bus, sup.pid()).await;
    let display = desk.display.name.clone();
    let shown = async |menu: &TrayMenu| {
        let clicked = Instant::now();
        menu.click("Show window").await;
        common::eventually("the window's QR code", async || {
            x11::picture(&display, "Chroxy")
                .and_then(|p| p.qr())
                .ok_or("not yet")
        })
        .await;
        clicked.elapsed().as_secs_f64() * 1000.0
    };
    let never = idle_rss(sup.pid(), workers).await;
    let open_ms = shown(&menu).await;
    let open = idle_rss(sup.pid(), workers).await;
    // Clicked until it goes: a click in the window's first instants can go unheard.
    common::eventually("the window and its page process gone", async || {
        let shown = x11::close(&display, "Chroxy");
        let web = common::webkit_of(sup.pid())
            .into_iter()
            .any(|p| common::comm(p).starts_with("WebKitWebProc"));
        if web || shown > 0 {
            Err("still there")
        } else {
            Ok(())
        }
    })
    .await;
    let closed = idle_rss(sup.pid(), workers).await;
    let reopen_ms = shown(&menu).await;
    Tray {
        open_ms,
        reopen_ms,
        rss: [never, open, closed],
    }
}

/// After a few quiet seconds, the median of ten samples of the RSS of the app, its
/// WebKit processes, its workers, and their sum (MB).
async fn idle_rss(app: u32, workers: [u32; 2]) -> [f64; 4] {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut samples = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..10 {
        let parts = [
            rss_mb(app),
            common::webkit_of(app)
                .iter()
                .fold(0.0, |sum, p| sum + rss_mb(*p)),
            workers.iter().map(|w| rss_mb(*w)).sum(),
        ];
        for (i, part) in parts.iter().enumerate() {
            samples[i].push(*part);
        }
        samples[3].push(parts.iter().sum());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    })
}

/// The app's launch → its QR code shown.
async fn until_qr(app: &Driven) -> Duration {
    let deadline = Instant::now() + common::WAIT;
    loop {
        let seen = app
            .window
            .js("return !!document.querySelector('#qr svg')")
            .await;
        if seen == serde_json::Value::Bool(true) {
            return app.launched.elapsed();
        }
        assert!(Instant::now() < deadline, "the QR code never showed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One install as a person does it: `dpkg -i` of the .deb (into a root of the bench's
/// own), then the installed app started: milliseconds of both, to its QR code.
async fn one_install(deb: &std::path::Path) -> f64 {
    let home = Home::new();
    let root = home.dir.path().join("root");
    let started = Instant::now();
    package::dpkg(&root, &["--install", deb.to_str().unwrap()]);
    let installing = started.elapsed();
    let desk = Desk::start(&home).await;
    let project = home.project();
    let app = desk
        .drive_app(
            root.join("usr/bin/chroxy-desktop").to_str().unwrap(),
            &home,
            &WorkerOpts::fake_cli(),
            &app_args("none", &project),
            "bench-desktop-installed",
        )
        .await;
    (installing + until_qr(&app).await).as_secs_f64() * 1000.0
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn row(figure: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p / 100.0).round() as usize];
    println!(
        "{figure:<48} {:>9.1} {:>9.1} {:>9.1} {:>5}",
        pct(50.0),
        pct(95.0),
        samples[samples.len() - 1],
        samples.len()
    );
}
