//! The rule for a blank environment, on values; then kills of real processes (Linux).

use super::*;

fn stat(state: char, kernel_thread: bool, env_end: u64) -> ProcStat {
    ProcStat {
        state,
        parent: 1,
        start_ticks: 1_000,
        kernel_thread,
        exiting: false,
        env_end,
    }
}

#[test]
fn a_blank_process_is_waited_for_only_while_it_may_be_mid_exec() {
    let (old, fresh) = (Duration::from_secs(600), Duration::from_millis(30));
    let laid_out = 0x7ffd_0000_1000;
    // The kernel has not yet set where its environment ends: an exec in progress.
    assert!(may_be_mid_exec(&stat('R', false, 0), old));
    assert!(may_be_mid_exec(&stat('D', false, 0), fresh));
    // Set, and empty: a fresh process may be having it written right now…
    assert!(may_be_mid_exec(&stat('R', false, laid_out), fresh));
    // …an old one was started with none (`env -i`) and shows none for good.
    assert!(!may_be_mid_exec(&stat('S', false, laid_out), old));
    assert!(!may_be_mid_exec(&stat('S', false, laid_out), FRESH));
    // No user memory, ever: a kernel thread, however young; and a zombie.
    assert!(!may_be_mid_exec(&stat('S', true, 0), fresh));
    assert!(!may_be_mid_exec(&stat('I', true, 0), old));
    assert!(!may_be_mid_exec(&stat('Z', false, 0), fresh));
    // Dying: its memory let go on its way to being a zombie (a kill's own victim).
    let dying = ProcStat {
        exiting: true,
        ..stat('R', false, 0)
    };
    assert!(!may_be_mid_exec(&dying, fresh));
}

#[test]
fn only_a_process_a_marked_parent_forked_may_be_starting_marked() {
    let me = 4_000;
    assert!(parent_may_mark(77, me, || true), "a marked parent");
    assert!(
        !parent_may_mark(77, me, || false),
        "a build's compiler, say"
    );
    // Cannot say: re-parented to init, or our own child.
    assert!(parent_may_mark(1, me, || false));
    assert!(parent_may_mark(me, me, || false));
}

#[test]
fn a_start_time_in_ticks_is_an_age() {
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    let uptime = Duration::from_secs(500);
    assert_eq!(started_ago(0, uptime), uptime);
    assert_eq!(
        started_ago(499 * per_second, uptime),
        Duration::from_secs(1)
    );
    // Later than the uptime read (it was read first): no age, not an overflow.
    assert_eq!(started_ago(501 * per_second, uptime), Duration::ZERO);
}

#[test]
fn a_blank_pid_is_looked_for_again_for_a_bounded_time_from_its_first_sight() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut unsettled = Unsettled::default();
    assert!(
        !unsettled.worth_another_look(&[], at(0)),
        "nothing to wait for"
    );
    assert!(unsettled.worth_another_look(&[7], at(0)));
    assert!(unsettled.worth_another_look(&[7], at(999)));
    // Blank for its whole second: stuck, or never going to show anything.
    assert!(!unsettled.worth_another_look(&[7], at(1_000)));
    // A newcomer is waited for, for its own second.
    assert!(unsettled.worth_another_look(&[7, 8], at(1_500)));
    assert!(!unsettled.worth_another_look(&[7, 8], at(2_500)));
    // 7 showed its environment; blank again later, it is waited for afresh.
    assert!(!unsettled.worth_another_look(&[], at(2_600)));
    assert!(unsettled.worth_another_look(&[7], at(2_700)));
}

/// Kills of real processes, told apart by marks unique to each test.
#[cfg(target_os = "linux")]
mod live {
    use super::super::*;
    use crate::process::{kill_group, own, stat_of};
    use std::os::unix::process::ExitStatusExt;
    use tokio::process::Command;

    /// `sleep 600` marked `mark`, once its environment shows the mark. The spawn
    /// returns as the child's exec takes its new memory, and its environment is blank
    /// to /proc until the exec has laid it out: on a loaded machine a scan in between
    /// sees no mark (it made these tests wait out the sleeps on CI).
    async fn marked_sleep(mark: &str) -> tokio::process::Child {
        let mut cmd = Command::new("sleep");
        cmd.arg("600").env(WORKER_MARK, mark);
        own(&mut cmd);
        let child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if scan(&|value| value == mark.as_bytes())
                .matched
                .contains(&pid)
            {
                return child;
            }
            assert!(Instant::now() < deadline, "{pid} never showed its mark");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn every_process_with_the_mark_is_killed_and_no_other() {
        let mut ours = marked_sleep("test-a").await;
        let mut other = marked_sleep("test-b").await;
        let before = stat_of(ours.id().unwrap()).unwrap();
        assert_ne!(before.state, 'Z');
        assert!(before.start_ticks > 0);
        let left = kill_marked("test-a", Duration::from_secs(5)).await;
        assert!(left.is_empty(), "{left:?}");
        assert!(ours.wait().await.unwrap().to_string().contains("signal: 9"));
        assert!(
            other.try_wait().unwrap().is_none(),
            "another mark is untouched"
        );
        kill_group(&mut other).await.unwrap();
    }

    #[tokio::test]
    async fn a_workers_tree_is_killed_but_the_clis_it_spares_and_other_workers_are_not() {
        let worker = format!("tree-{}", std::process::id());
        let mut own_process = marked_sleep(&worker).await;
        let mut cli = marked_sleep(&format!("{worker}.s1.1")).await;
        let mut kept = marked_sleep(&format!("{worker}.s2.1")).await;
        // A worker whose mark starts like this one's is another worker.
        let mut neighbour = marked_sleep(&format!("{worker}0.s1.1")).await;
        let spare = vec![format!("{worker}.s2.1")];
        let left = kill_worker_tree(&worker, spare, Duration::from_secs(5)).await;
        assert!(left.is_empty(), "{left:?}");
        for killed in [&mut own_process, &mut cli] {
            assert!(killed
                .wait()
                .await
                .unwrap()
                .to_string()
                .contains("signal: 9"));
        }
        for spared in [&mut kept, &mut neighbour] {
            assert!(spared.try_wait().unwrap().is_none(), "spared");
            kill_group(spared).await.unwrap();
        }
    }

    /// `sleep 600` marked `mark`, slow to show its environment: the spawn returns as its
    /// exec takes the new memory, and before the kernel sets where the environment ends
    /// it writes a pointer to each argument; this one has as many extra arguments (`0`s:
    /// `sleep` adds them up) as the stack limit lets it pass, up to 300 000, which makes
    /// that moment last milliseconds. (Extra variables would not do: the spawn frees
    /// its copy of them before it returns, and by then they are written.)
    fn slow_to_show_its_mark(mark: &str) -> Command {
        use nix::sys::resource::{getrlimit, Resource};
        // The kernel lets an exec's strings and pointers take a quarter of the stack
        // limit, at most 6 MiB; a `0` costs 10 bytes. Room is left for our environment.
        let (stack, _) = getrlimit(Resource::RLIMIT_STACK).unwrap();
        let room = (stack / 4).min(6 << 20).saturating_sub(512 << 10);
        let extra = (room / 10).min(300_000) as usize;
        assert!(
            extra >= 100_000,
            "a stack limit of {stack} B is too low for this test"
        );
        let mut cmd = Command::new("sleep");
        cmd.arg("600")
            .args(std::iter::repeat_n("0", extra))
            .env(WORKER_MARK, mark);
        own(&mut cmd);
        cmd
    }

    /// Kills by the mark right after the spawn, while the exec is likely still writing
    /// its arguments' pointers, and checks that the sleep died: the old scan took the
    /// blank for "not marked", returned at once and left it sleeping. The moment falls
    /// on the kill's first scan about every other time here, so eight rounds; the old
    /// code failed this test in each of five runs.
    #[tokio::test]
    async fn a_process_still_in_its_exec_is_killed() {
        let mark = format!("in-exec-{}", std::process::id());
        for round in 0..8 {
            let mut cmd = slow_to_show_its_mark(&mark);
            let mut child = cmd.spawn().unwrap();
            let left = kill_marked(&mark, Duration::from_secs(5)).await;
            // Only now: freeing its arguments takes longer than the exec's moment.
            drop(cmd);
            assert!(left.is_empty(), "{left:?}");
            // Killed, it ends now; missed, it sleeps on (dropped, `own` kills it).
            let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .unwrap_or_else(|_| panic!("round {round}: the kill missed it; it sleeps on"))
                .unwrap();
            assert_eq!(
                status.signal(),
                Some(Signal::SIGKILL as i32),
                "round {round}"
            );
        }
    }

    #[tokio::test]
    async fn the_stat_says_what_the_rule_reads() {
        // Ours is laid out: its end is the stat's last field but one (the exit code is
        // last), and it starts as many bytes before as /proc shows.
        let me = stat_of(std::process::id()).unwrap();
        assert!(!me.kernel_thread);
        let line = std::fs::read_to_string("/proc/self/stat").unwrap();
        let tail: Vec<u64> = line
            .split_whitespace()
            .rev()
            .skip(1)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        assert_eq!(me.env_end, tail[0]);
        let env = std::fs::read("/proc/self/environ").unwrap();
        assert_eq!(me.env_end - tail[1], env.len() as u64);

        // Started with no environment: once its exec is done it reads blank for good,
        // its end set.
        let mut cmd = Command::new("sleep");
        cmd.arg("600").env_clear();
        let mut bare = own(&mut cmd).spawn().unwrap();
        let pid = bare.id().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let laid_out = loop {
            let stat = stat_of(pid).unwrap();
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
            if env.is_empty() && stat.env_end != 0 {
                break stat;
            }
            assert!(Instant::now() < deadline, "its exec never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(!laid_out.kernel_thread);
        kill_group(&mut bare).await.unwrap();

        // Kernel threads, where this system shows them: kthreadd (pid 2) and its
        // children, with no user memory.
        let kthreadd = std::fs::read_to_string("/proc/2/stat").unwrap_or_default();
        if kthreadd.starts_with("2 (kthreadd) ") {
            assert!(stat_of(2).unwrap().kernel_thread);
        }
        for pid in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(stat) = pid
                .file_name()
                .to_str()
                .and_then(|p| p.parse().ok())
                .and_then(stat_of)
            else {
                continue;
            };
            if stat.kernel_thread {
                assert!(stat.parent <= 2 && stat.env_end == 0, "{stat:?}");
            }
        }
    }
}
