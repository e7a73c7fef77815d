//! The figures a user would compare Chroxy on, measured on the whole system: a real
//! `chroxy start` (supervisor, public port, supervised worker) on loopback, the real
//! Claude Code CLI behind a scripted model where the figure is about the whole system,
//! `fake-claude` where it needs exact timing, and phones as WebSocket clients going
//! through the public port. One table, each figure with p50/p95/p99 and its run count.
//!
//! `cargo bench --bench system` runs it all (a few minutes on 2 cores) and rewrites
//! BENCHMARKS.md; `CHROXY_BENCH_QUICK=1` runs a short version for CI and writes
//! nothing. Every wait is on a condition under a deadline, and anything unexpected
//! panics with what was seen: the bench prints only what it measured.
//!
//! # Layout
//!
//! - `system.rs`: one `chroxy start` on a temporary home; memory from `/proc`.
//! - `../../tests/common`: the tests' harness, for the pinned CLI and process trees.
//! - `client.rs`: a phone (auth, reconnect, deadlines, `BENCH` stream checks).
//! - `recovery.rs`: kill -9 and rollback → phone re-authenticated.
//! - `memory.rs`: supervisor + worker RSS.
//! - `first_turn.rs`, `warm_turn.rs`: a new session's first turn; a warm turn through
//!   Chroxy; each beside the bare CLI's (`bare.rs`), the floor.
//! - `stream.rs`: CLI line → phone frame (plain and end-to-end encrypted); fan-out to 50 phones.
//! - `encryption.rs`: protocol v2's handshake and the cost of sealing a frame.
//! - `permissions.rs`: the permission round trip, timed by `fake-claude`.
//! - `hostile.rs`: 10 000 hostile frames.
//! - `flood.rs`: the owner's phone during a flood of 3 000 hostile sockets.
//! - `report.rs`, `machine.rs`: the table and BENCHMARKS.md.

// The tests' harness, for what the bench shares with them (the pinned CLI, /proc).
#[path = "../../tests/common/mod.rs"]
mod common;

mod bare;
mod client;
mod encryption;
mod first_turn;
mod flood;
mod hostile;
mod machine;
mod memory;
mod permissions;
mod recovery;
mod report;
mod stream;
mod system;
mod warm_turn;

use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use report::Figure;
use system::{Agent, System};

/// How much work each figure does.
pub struct Plan {
    /// `CHROXY_BENCH_QUICK=1`: a short run that keeps the bench from rotting.
    pub quick: bool,
    /// Workers killed with SIGKILL mid-turn.
    pub kills: usize,
    /// `chroxy rollback`s to the known-good release.
    pub rollbacks: usize,
    /// CLI lines timed to the phone, and how far apart the CLI writes them.
    pub lines: u64,
    pub line_interval_us: u64,
    /// Permission prompts answered in a row.
    pub prompts: usize,
    /// Deltas streamed to the 50 fan-out phones.
    pub fan_out_deltas: u64,
    /// RSS samples per state.
    pub rss_samples: usize,
    /// Hostile frames (a multiple of 1 000).
    pub hostile: usize,
    /// Hostile sockets in the flood, and how long they are held.
    pub flood: usize,
    pub flood_hold: std::time::Duration,
    /// Turns of `throughput_deltas` deltas written as fast as the pipe takes them.
    pub throughput_runs: usize,
    pub throughput_deltas: u64,
    /// Connections timed from socket open to `auth_ok`, per protocol.
    pub handshakes: usize,
    /// Frames sealed and opened in process.
    pub sealed_frames: usize,
    /// New sessions whose first turn is timed, each way.
    pub first_turns: usize,
    /// Warm turns timed through Chroxy, and by the bare CLI.
    pub warm_turns: usize,
    /// Warm turns whose way through Chroxy `fake-claude` stamps.
    pub bridge_turns: usize,
}

impl Plan {
    fn from_env() -> Self {
        let full = Self {
            quick: false,
            kills: 20,
            rollbacks: 10,
            lines: 10_000,
            line_interval_us: 500,
            prompts: 1_000,
            fan_out_deltas: 5_000,
            rss_samples: 20,
            hostile: 10_000,
            flood: 3_000,
            flood_hold: std::time::Duration::from_secs(30),
            throughput_runs: 8,
            throughput_deltas: 100_000,
            handshakes: 200,
            sealed_frames: 100_000,
            first_turns: 20,
            warm_turns: 200,
            bridge_turns: 200,
        };
        if std::env::var("CHROXY_BENCH_QUICK").is_ok_and(|v| v == "1") {
            Self {
                quick: true,
                kills: 3,
                rollbacks: 2,
                lines: 1_000,
                prompts: 100,
                fan_out_deltas: 500,
                rss_samples: 4,
                hostile: 1_000,
                flood: 300,
                flood_hold: std::time::Duration::from_secs(3),
                throughput_runs: 2,
                throughput_deltas: 20_000,
                handshakes: 20,
                sealed_frames: 10_000,
                first_turns: 3,
                warm_turns: 3,
                bridge_turns: 10,
                ..full
            }
        } else {
            full
        }
    }
}

/// A message budget that hundreds of turns or prompts in a row stay within (the
/// default is 100 a minute, the pace of a person).
macro_rules! budget {
    () => {
        "[worker]\nmessages_per_minute = 1000000\nmessage_burst = 100000\n"
    };
}
/// The system for the recovery, memory and turn figures: its defaults, except that each
/// kill counts as an independent crash (see report::METHOD), and the message budget.
const WHOLE: &str = concat!(
    "[supervisor]\nhealthy_reset_ms = 0\ncrash_budget = 1000\n",
    budget!()
);
/// The system for the timing figures: the message budget, and coalescing off (one
/// frame per CLI line).
const TIMING: &str = concat!(budget!(), "coalesce_ms = 0\n");
/// The system for what Chroxy holds a turn for: its defaults but the message budget.
const BUDGET: &str = budget!();
/// The system under attack: all defaults.
const DEFAULTS: &str = "";

fn main() {
    let plan = Plan::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the bench's tokio runtime");
    let load_at_start = machine::load_average();
    let started = Instant::now();
    let (figures, crashes) = runtime.block_on(run(&plan));
    let took = started.elapsed();

    let rows: Vec<report::Row> = figures
        .iter()
        .flat_map(|f| f.rows.iter().cloned())
        .collect();
    let table = report::table(&rows);
    let details: Vec<&String> = figures.iter().flat_map(|f| &f.details).collect();
    let machine = machine::Machine::describe(load_at_start);
    println!();
    println!(
        "chroxy system bench: {} run, {} cores, took {:.0} s, load average {} → {}",
        if plan.quick {
            "quick (CHROXY_BENCH_QUICK=1)"
        } else {
            "full"
        },
        machine.cores,
        took.as_secs_f64(),
        machine.load.0,
        machine.load.1
    );
    println!();
    print!("{table}");
    println!();
    for d in &details {
        println!("{d}");
        println!();
    }
    if plan.quick || cfg!(debug_assertions) {
        println!("quick or debug run: BENCHMARKS.md left as it is (only `cargo bench --bench system` writes it)");
    } else {
        let path = common::benchmarks_doc::path();
        // The tray app bench's section stays as its last run left it.
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let tray = common::benchmarks_doc::tray_section(&old).map(str::to_owned);
        let mut doc = String::new();
        doc.push_str("# Benchmarks\n\n");
        doc.push_str("<!-- Generated by `cargo bench --bench system` (benches/system/). Do not edit by hand: run it again. -->\n\n");
        doc.push_str(&format!(
            "Generated by `cargo bench --bench system` in {:.0} s. The whole system on loopback; how each figure is taken is below the table.\n\n",
            took.as_secs_f64()
        ));
        doc.push_str("## Machine\n\n");
        doc.push_str(&machine.markdown());
        doc.push_str("\n## Figures\n\n");
        doc.push_str(&table);
        doc.push('\n');
        for d in &details {
            doc.push_str(d);
            doc.push_str("\n\n");
        }
        doc.push_str("## How\n\n");
        doc.push_str(report::METHOD);
        doc.push('\n');
        if let Some(tray) = tray {
            doc.push('\n');
            doc.push_str(&tray);
            doc.push('\n');
        }
        std::fs::write(&path, doc).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        println!("wrote {}", path.display());
    }
    if crashes > 0 {
        eprintln!("hostile frames crashed the system {crashes} time(s)");
        std::process::exit(1);
    }
}

async fn run(plan: &Plan) -> (Vec<Figure>, u64) {
    // Timing first, with fake-claude, on a machine nothing has disturbed yet: on this
    // VM the real CLIs' phase below leaves the host taking CPU time back for minutes
    // (steal time), which shows up as milliseconds in these p99s.
    let fake = Agent::Fake;
    let stolen = machine::CpuTime::now();
    let sys = System::start("timing", &fake, TIMING).await;
    let mut line = stream::line_to_frame(&sys, plan, fake.label(), false).await;
    let sealed_line = stream::line_to_frame(&sys, plan, fake.label(), true).await;
    let handshakes = encryption::handshake(&sys, plan, fake.label()).await;
    let prompts = permissions::round_trip(&sys, plan, fake.label()).await;
    let fan_out = stream::fan_out(&sys, plan, fake.label()).await;
    sys.stop().await;
    line.details.push(stolen.stolen_since("timing figures"));

    // Then the whole system with the real CLI: memory first (a fresh worker), then crashes
    // and rollbacks.
    let model_stop = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the scripted model");
    let (model, _task) =
        chroxy::demo::spawn(listener, model_stop.clone()).expect("starting the scripted model");
    let (claude, cli_env) = (common::claude_bin(), model.cli_env());
    let real = Agent::Real {
        claude: claude.clone(),
        env: cli_env.clone(),
    };
    let stolen = machine::CpuTime::now();
    let sys = System::start("whole system", &real, WHOLE).await;
    let memory = memory::run(&sys, plan, real.label()).await;
    let kills = recovery::kills(&sys, plan, real.label()).await;
    let rollbacks = recovery::rollbacks(&sys, plan, real.label()).await;
    let mut first_turns = first_turn::run(&sys, plan, real.label(), &claude, &cli_env).await;
    let warm_turns = warm_turn::run(&sys, plan, real.label(), &claude, &cli_env).await;
    sys.stop().await;
    first_turns
        .details
        .push(stolen.stolen_since("whole-system figures"));
    // Every real-CLI turn above reached the scripted model (a CLI that cannot reach it
    // answers "Not logged in" instead, which would make these figures meaningless).
    let turns = (memory::SESSIONS * 3
        + 2 * plan.kills
        + plan.rollbacks
        + 3 * plan.first_turns
        + 2 * (plan.warm_turns + 1)) as u64;
    assert!(
        model.turns_seen() >= turns,
        "the scripted model saw {} turns, expected at least {turns}",
        model.turns_seen()
    );
    model_stop.cancel();

    // What Chroxy holds a turn for, at the defaults but the message budget.
    let sys = System::start("bridge", &fake, BUDGET).await;
    let bridge = warm_turn::bridge(&sys, plan, fake.label()).await;
    sys.stop().await;

    // At the defaults: the attack on a fresh system, then throughput.
    let sys = System::start("defaults", &fake, DEFAULTS).await;
    let (hostile, crashes) = hostile::storm(&sys, plan, fake.label()).await;
    let throughput = stream::throughput(&sys, plan, fake.label()).await;
    sys.stop().await;

    // The flood on a fresh system at its defaults.
    let sys = System::start("flood", &fake, DEFAULTS).await;
    let flood = flood::run(&sys, plan, fake.label()).await;
    sys.stop().await;

    let figures = vec![
        kills,
        rollbacks,
        first_turns,
        warm_turns,
        bridge,
        line,
        sealed_line,
        handshakes,
        prompts,
        fan_out,
        memory,
        throughput,
        hostile,
        flood,
    ];
    (figures, crashes)
}
