//! Samples → the one table: percentiles, units, targets, and BENCHMARKS.md.

use std::fmt::Write as _;

/// Nearest-rank percentile of sorted samples (with 20 runs p95 is the 19th, p99 the
/// 20th: the worst).
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "no samples");
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// A duration in seconds, in the unit that keeps three significant digits.
pub fn secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.0} ms", s * 1e3)
    } else if s >= 0.001 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// 10000 → "10 000".
pub fn thousands(n: impl Into<u64>) -> String {
    let digits = n.into().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Bytes in MB (10⁶ bytes: the unit of the targets, read strictly).
pub fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

/// Which percentile a target is about.
#[derive(Clone, Copy)]
pub enum Pct {
    P95,
    P99,
}

/// One row of the table.
#[derive(Clone)]
pub struct Row {
    pub figure: String,
    /// Which `claude` the sessions ran ("-" where none is involved).
    pub agent: &'static str,
    /// Runs or samples, and of what.
    pub runs: String,
    pub p50: String,
    pub p95: String,
    pub p99: String,
    /// The target and whether it was met; `None` where there is none.
    pub target: Option<(String, bool)>,
}

impl Row {
    /// A row of percentiles of `samples`, formatted by `fmt`, checked against `limit`
    /// at percentile `at` (strictly below; `shown` is how the target reads).
    pub fn percentiles(
        figure: impl Into<String>,
        agent: &'static str,
        runs: impl Into<String>,
        samples: &[f64],
        fmt: fn(f64) -> String,
        target: Option<(Pct, f64, &str)>,
    ) -> Self {
        let s = sorted(samples);
        let (p50, p95, p99) = (pct(&s, 50.0), pct(&s, 95.0), pct(&s, 99.0));
        let target = target.map(|(at, limit, shown)| {
            let (name, value) = match at {
                Pct::P95 => ("p95", p95),
                Pct::P99 => ("p99", p99),
            };
            (format!("{name} < {shown}"), value < limit)
        });
        Self {
            figure: figure.into(),
            agent,
            runs: runs.into(),
            p50: fmt(p50),
            p95: fmt(p95),
            p99: fmt(p99),
            target,
        }
    }

    /// What `samples` add over `floor`, taken in the same run: the difference of their
    /// medians, with its sign, checked against `limit` (strictly below; `shown` is how
    /// the target reads).
    pub fn difference_of_medians(
        figure: impl Into<String>,
        agent: &'static str,
        runs: impl Into<String>,
        (samples, floor): (&[f64], &[f64]),
        target: Option<(f64, &str)>,
    ) -> Self {
        let median = |xs: &[f64]| pct(&sorted(xs), 50.0);
        let added = median(samples) - median(floor);
        Self {
            figure: figure.into(),
            agent,
            runs: runs.into(),
            p50: signed(added),
            p95: "-".into(),
            p99: "-".into(),
            target: target.map(|(limit, shown)| (format!("p50 < {shown}"), added < limit)),
        }
    }

    /// A row with one value (a count) instead of percentiles.
    pub fn count(
        figure: impl Into<String>,
        agent: &'static str,
        runs: impl Into<String>,
        value: u64,
        target: Option<(&str, bool)>,
    ) -> Self {
        Self {
            figure: figure.into(),
            agent,
            runs: runs.into(),
            p50: value.to_string(),
            p95: "-".into(),
            p99: "-".into(),
            target: target.map(|(t, met)| (t.to_owned(), met)),
        }
    }
}

/// What one figure contributes: rows, and lines that say what else was seen.
#[derive(Default)]
pub struct Figure {
    pub rows: Vec<Row>,
    pub details: Vec<String>,
}

/// The table, as Markdown (readable as plain text too). In a debug build the targets
/// are shown but not judged.
pub fn table(rows: &[Row]) -> String {
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let (target, met) = match &r.target {
                // Unoptimized binaries (`cargo test --bench system` in CI) are bigger and
                // slower: their figures keep the bench from rotting, they are no verdict.
                Some((t, _)) if cfg!(debug_assertions) => (t.clone(), "(debug build)".to_owned()),
                Some((t, true)) => (t.clone(), "met".to_owned()),
                Some((t, false)) => (t.clone(), "**MISSED**".to_owned()),
                None => ("-".to_owned(), "-".to_owned()),
            };
            [
                r.figure.clone(),
                r.agent.to_owned(),
                r.runs.clone(),
                r.p50.clone(),
                r.p95.clone(),
                r.p99.clone(),
                target,
                met,
            ]
        })
        .collect();
    let header = [
        "figure", "agent", "runs", "p50", "p95", "p99", "target", "result",
    ];
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let right = [false, false, false, true, true, true, false, false];
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for ((c, w), r) in cells.iter().zip(&width).zip(right) {
            let pad = " ".repeat(w - c.chars().count());
            if r {
                let _ = write!(s, " {pad}{c} |");
            } else {
                let _ = write!(s, " {c}{pad} |");
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&header.map(str::to_owned));
    out.push('|');
    for (w, r) in width.iter().zip(right) {
        let dashes = "-".repeat(w.saturating_sub(1).max(1));
        out.push_str(&if r {
            format!(" {dashes}: |")
        } else {
            format!(" {dashes}- |")
        });
    }
    out.push('\n');
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

/// How every figure is taken; fixed text, part of BENCHMARKS.md.
pub const METHOD: &str = "\
- Tail percentiles (p99) on a 2-core machine move with whatever else runs on it; the
  load averages above say how busy it was. On a VM the host matters as much: the
  share of CPU time the hypervisor stole during each phase is below the table. The
  millisecond figures run first, on a machine nothing in the bench has disturbed yet.
  Runs on this 2-core VM put the line → frame p99 at 0.4–1 ms with steal under 2 %
  and at 7–30 ms with steal around 30 %, on the same commit: compare p99s only
  between runs whose steal is alike.
- Everything runs on 127.0.0.1: a real `chroxy start --tunnel none` (supervisor, public port,
  status page, a supervised worker) on a temporary CHROXY_HOME, phones are WebSocket
  clients in the bench process that go through the supervisor's public port, as a
  phone behind the tunnel does. Percentiles are nearest-rank: with 10 or 20 runs, p99 is
  the worst run (and with 10, so is p95).
- *Claude Code CLI*: the pinned real CLI (`scripts/install-claude`) answering from the
  scripted Messages API (`chroxy::demo`, in the bench process). *fake-claude*:
  `tests/fixtures/fake_claude.rs`, where the figure needs timing only a stand-in can
  give (timestamps written into the output, round trips timed on the CLI's side).
- Kill: once the standby is ready, a phone sends a slow streamed turn; at its first
  `stream_delta` the worker process gets SIGKILL. Clock: the kill → the same phone,
  reconnecting every 5 ms through the public port, has `auth_ok` from the new worker.
  The rest of that turn (its answer and `agent_idle`) must then reach the phone, from
  the CLI the standby adopted (checked, not timed). Then, the next standby ready, the
  worker is killed again between turns, and the phone, back, sends `REPLY …`. Clock:
  that kill → the answer's `agent_idle`. Each kill is an independent crash
  (`healthy_reset_ms = 0` and a crash budget of 1 000, so a kill the standby does not
  take over is restarted at the 0.5 s back-off floor; a real crash loop backs off
  further and rolls back, by design).
- Rollback: with a second release serving and its session's CLI running (one turn
  done), `chroxy rollback` is run as a process. Clock: command start → the phone,
  dropped by the drain, has `auth_ok` from the known-good release (checked on the status
  page afterwards).
- First turn: a phone opens a new session and sends `REPLY the first answer` either once
  the session's `claude_ready` says its CLI is up, or the instant the session opens.
  Clock: input sent → `result` on the phone. Turn about, the floor: the same CLI binary
  started by the bench alone (the arguments Chroxy gives it, a home of its own, the
  same scripted model), up once it answered `initialize` as Chroxy's CLIs are, then the
  same first turn, its stdin line written → its `result` line read. The last row is
  the difference of the medians of that and the first row.
- Warm turn: on a session whose CLI already answered once, `REPLY the warm answer`,
  input sent → `result` on the phone; and the bare CLI as above (`initialize`
  answered, one turn already answered), the same turn, its stdin line written → its
  `result` line read. The system's message budget is raised past the default 100 a
  minute (the limiter still runs) for 200 of each, turn about, so that whatever else
  the machine does falls on both alike; which of the two goes first alternates, and
  each is timed after 30 ms of quiet, so that what the other CLI still does after its
  result line falls on neither. Fewer turns cannot resolve a millisecond, as the CLI's
  own turn varies by ten. The third row is the difference of the two medians: what
  Chroxy adds.
- What Chroxy holds a warm turn for, with no CLI in it: on the default configuration
  but for a message budget they fit in (the default is 100 a minute), 200 turns of
  `fake-claude`'s `STAMP 20` after one warm-up turn. Its stdin reader stamps the input
  line (CLOCK_MONOTONIC); it answers 20 ms later (a model's time: what Chroxy does
  beside a turn, such as writing the input to disk, is done by then, as with a real
  turn) and stamps its result line right before writing it; each such turn reports a
  cost, as a real turn does, so the day's spend is kept on the way out too. Way in:
  the phone's send → the CLI's read; way out: the result line written → the phone's
  `result`; and their sum, per turn.
- Line → frame: `fake-claude` writes each delta's number and CLOCK_MONOTONIC time into
  its text right before writing the line; the phone's receive time minus that, on the
  same clock. Every delta must arrive once, in order. Coalescing off (`coalesce_ms =
  0`), so every line is one frame. The CLI writes on an absolute schedule and says how
  late it wrote each line (below the table): a worker that stopped reading its pipe
  would make the CLI late, which the latencies alone would hide.
- Permission round trip: `fake-claude`'s `PERMISSIONS n` asks `can_use_tool` n times in
  a row and times each from just before its request line is written to the moment its
  stdin reader has the answer; a phone answers each `permission_request` with `allow`.
  The per-connection message budget is raised for this system (a real phone does not
  answer 1 000 prompts a second; the rate limit is what the hostile figure tests).
- Fan-out: 50 phones on one session, `fake-claude` streaming at 500 deltas/s,
  coalescing off; latency as for line → frame, over every delta of every phone; drops
  are the deltas phones never got, and the phones closed as too slow.
- RSS: VmRSS of the supervisor process plus that of the worker process
  (/proc/<pid>/status); the CLI processes are separate processes and so excluded.
  Sampled every 50 ms. Idle: one phone connected, no turn yet. 5 sessions: each ran
  three turns (a short answer, a Bash tool use whose permission prompt the phone
  allowed, a longer answer) and keeps its CLI. 50 phones: the same plus 50 connected
  phones. After the throughput runs: 10 phones connected, and a session whose history
  is at its 8 MB budget (each of those turns is a text of about 2.7 MB, 100 000
  `seq:written:late;` stamps); the rest is mostly heap that glibc's allocator keeps
  after those turns' peaks (no target: a figure to watch, not to meet).
- Throughput (no target): `fake-claude` writes 100 000 deltas as fast as the pipe takes
  them, at the default 50 ms coalescing; clock from the first delta's timestamp to the
  moment the last of 10 phones has every delta (each checked once, in order).
- Hostile: frames sent through the public port by 4 concurrent attackers while a
  bystander phone stays connected: not JSON, not an object, binary, over 1 MiB, over
  8 MiB, fields too long, wrong or missing fields, unknown types, frames before `auth`,
  and floods of valid requests. A crash is the worker or supervisor process dying or
  restarting (pids and the restart count on the status page before and after; a crash
  in the middle of the storm also fails the run, as the attackers are then refused at
  the public port); the bystander must still be connected and answered afterwards. Latency: frame sent → its
  answer (an error, `rate_limited`, an answer, or the close that ends the connection).
- Flood: on a fresh system at its defaults, 3 000 sockets opened at once from 100
  addresses (127.0.1.1–100) through the public port (a quarter each half-open, upgraded and silent, upgraded with
  half an `auth` frame, upgraded with a wrong token) and held for 30 s, while the owner's
  phone on 127.0.0.1 connects every 100 ms: the figure is connect → `auth_ok`, retried at
  once when the public port drops the attempt. Restarts: the status page's count before
  and after, and the state must not have moved.";

/// A difference of durations, with its sign.
fn signed(s: f64) -> String {
    if s < 0.0 {
        format!("-{}", secs(-s))
    } else {
        format!("+{}", secs(s))
    }
}
