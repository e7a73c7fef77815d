//! The tray app as a user starts it: launch → QR code visible in the window, and what
//! it holds in memory once idle; and as a user installs it: the package's size, and
//! `dpkg -i` of the .deb → the installed app's QR code visible. The real app on a virtual display, started by
//! tauri-driver (the session's creation launches it; the clock starts there), its
//! supervisor and worker inside, `fake-claude` as the agent, no tunnel (the QR code
//! then carries the local URL at once: what is measured is the app, not Cloudflare).
//!
//! `cargo bench -p chroxy-desktop --bench desktop`; `CHROXY_BENCH_QUICK=1` runs once
//! (CI, so it never rots). Every wait is on a condition under a deadline.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::desktop::{app_args, Desk, Driven};
use common::package;
use common::supervisor::Sup;
use common::{Home, WorkerOpts};

fn main() {
    let quick = std::env::var("CHROXY_BENCH_QUICK").is_ok_and(|v| v == "1");
    let runs = if quick { 1 } else { 5 };
    build_worker_binaries();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let mut to_qr = Vec::new();
    let mut memory = Vec::new();
    let mut install_to_qr = Vec::new();
    let built = runtime.block_on(async {
        for _ in 0..runs {
            let (qr, rss) = one_start().await;
            to_qr.push(qr);
            memory.push(rss);
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
    for (i, what) in [
        "app RSS idle: window + supervisor (MB)",
        "  its WebKit processes (MB)",
        "  its worker, agent excluded (MB)",
    ]
    .iter()
    .enumerate()
    {
        row(what, memory.iter().map(|m| m[i]).collect());
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

/// One cold start: milliseconds to the QR code, then [app, WebKit, worker] RSS in MB.
async fn one_start() -> (f64, [f64; 3]) {
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
    let to_qr = until_qr(&app).await.as_secs_f64() * 1000.0;

    // Idle: healthy, nothing connected, nothing happening for a few seconds.
    let sup = Sup::attach(&home, app.log.clone()).await;
    let status = sup.healthy().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let worker = status["worker"]["pid"].as_u64().unwrap() as u32;
    let webkit: Vec<u32> = common::descendants_of(sup.pid())
        .into_iter()
        .filter(|p| comm(*p).starts_with("WebKit"))
        .collect();
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..10 {
        samples[0].push(rss_mb(sup.pid()));
        samples[1].push(webkit.iter().map(|p| rss_mb(*p)).sum());
        samples[2].push(rss_mb(worker));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rss = [
        median(&mut samples[0]),
        median(&mut samples[1]),
        median(&mut samples[2]),
    ];
    (to_qr, rss)
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

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
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
