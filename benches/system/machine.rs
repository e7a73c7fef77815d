//! The machine and build a run was made on, for BENCHMARKS.md: figures from a 2-core VM
//! and from a workstation are not comparable, so each table says where it came from.

use std::process::Command;

pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub ram: String,
    pub os: String,
    pub rustc: String,
    pub commit: String,
    pub date: String,
    /// 1-minute load averages when the run started and when it ended.
    pub load: (String, String),
}

impl Machine {
    /// `load_at_start`: [`load_average`] when the run began.
    pub fn describe(load_at_start: String) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let mhz = cpuinfo.lines().find_map(|l| {
            l.strip_prefix("cpu MHz")?
                .split_once(':')?
                .1
                .trim()
                .parse::<f64>()
                .ok()
        });
        let cpu = match mhz {
            Some(mhz) => format!("{cpu} @ {:.1} GHz", mhz / 1000.0),
            None => cpu,
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram = meminfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or_else(
                || "unknown".into(),
                |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
            );
        let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let distro = release
            .lines()
            .find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let commit = output("git", &["rev-parse", "--short=12", "HEAD"]);
        // Not counting the table itself: a second run on the same commit is still clean.
        let dirty = !output(
            "git",
            &[
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!BENCHMARKS.md",
            ],
        )
        .is_empty();
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            ram,
            os: format!(
                "{distro}, Linux {} ({})",
                kernel.trim(),
                std::env::consts::ARCH
            ),
            rustc: env!("CHROXY_RUSTC").to_owned(),
            commit: match (commit.is_empty(), dirty) {
                (true, _) => "unknown (not a git checkout)".into(),
                (false, false) => commit,
                (false, true) => format!("{commit} plus uncommitted changes"),
            },
            date: utc_now(),
            load: (load_at_start, load_average()),
        }
    }

    pub fn markdown(&self) -> String {
        format!(
            "- CPU: {} ({} cores available)\n- RAM: {}\n- OS: {}\n- Rust: {}\n- Commit: {}\n- Date: {}\n- Load average (1 min) at start / end of the run: {} / {}\n",
            self.cpu, self.cores, self.ram, self.os, self.rustc, self.commit, self.date, self.load.0, self.load.1
        )
    }
}

/// The 1-minute load average (/proc/loadavg).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// A command's trimmed stdout in the repository; empty if it failed.
fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `YYYY-MM-DD HH:MM UTC`, as `date` tells it.
fn utc_now() -> String {
    let now = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    if now.is_empty() {
        "unknown".into()
    } else {
        now
    }
}

/// The machine's CPU time so far (the first line of /proc/stat), to say how much of a
/// phase the hypervisor took: on a VM, "steal" is time a vCPU was ready to run and the
/// host ran something else, which no change to Chroxy can win back.
#[derive(Clone, Copy)]
pub struct CpuTime {
    steal: u64,
    total: u64,
}

impl CpuTime {
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|f| f.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        Self {
            // user nice system idle iowait irq softirq steal guest guest_nice; guest
            // time is already inside user.
            steal: fields.get(7).copied().unwrap_or(0),
            total: fields.iter().take(8).sum(),
        }
    }

    /// `what: x % of the CPU time since `self` was stolen by the hypervisor`.
    pub fn stolen_since(self, what: &str) -> String {
        let now = Self::now();
        let total = now.total.saturating_sub(self.total).max(1);
        let steal = now.steal.saturating_sub(self.steal);
        format!(
            "{what}: {:.1} % of the machine's CPU time was stolen by the hypervisor (/proc/stat)",
            100.0 * steal as f64 / total as f64
        )
    }
}
