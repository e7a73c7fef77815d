use std::io::IoSlice;
use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_seqpacket::ancillary::AncillaryMessageWriter;
use tokio_seqpacket::UnixSeqpacket;

use super::keeping::ADOPTION_DEADLINE;
use super::*;
use crate::process;

fn agent(mark: &str, pid: u32) -> AgentId {
    AgentId {
        mark: mark.into(),
        session: "s1".into(),
        pid,
        start_ticks: process::stat_of(pid).map(|s| s.start_ticks),
    }
}

/// `cat` with all three pipes: what goes in comes out, as long as its stdin is open.
fn cat(mark: &str) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new("cat");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env(process::WORKER_MARK, mark);
    process::own(&mut cmd);
    cmd.spawn().unwrap()
}

/// The worker mark of a test: unique to it among the tests running at once.
fn worker(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// A child's three pipes, as the worker that started it holds them.
fn pipes(c: &tokio::process::Child) -> [std::os::fd::BorrowedFd<'_>; 3] {
    [
        c.stdin.as_ref().unwrap().as_fd(),
        c.stdout.as_ref().unwrap().as_fd(),
        c.stderr.as_ref().unwrap().as_fd(),
    ]
}

/// A keeper expecting the worker `mark` as `pid`, and a link to it from this process.
async fn keeper_and_link(
    dir: &tempfile::TempDir,
    mark: &str,
    pid: u32,
) -> (Keeping, std::io::Result<(Link, mpsc::Receiver<Kept>)>) {
    let keeping = Keeping::listen(dir.path().join("k.sock"), mark.to_owned()).unwrap();
    keeping.handle().expect(pid);
    let path = dir.path().join("k.sock");
    let link = UnixSeqpacket::connect(&path)
        .await
        .map(|socket| Link::over(socket, mark));
    if pid == std::process::id() {
        // Admitted: the keeper takes its socket off the file system then.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while path.exists() {
            assert!(tokio::time::Instant::now() < deadline, "not admitted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    (keeping, link)
}

#[tokio::test]
async fn a_cli_whose_worker_let_go_of_its_pipes_carries_on_through_the_keepers() {
    let dir = tempfile::tempdir().unwrap();
    let (keeping, link) = keeper_and_link(&dir, &worker("keep"), std::process::id()).await;
    let (link, _adopted) = link.unwrap();
    let mark = format!("{}.s1.1", worker("keep"));
    let mut child = cat(&mark);
    let pid = child.id().unwrap();
    let (stdin, stdout, stderr) = (
        child.stdin.take().unwrap(),
        child.stdout.take().unwrap(),
        child.stderr.take().unwrap(),
    );
    link.keep(
        agent(&mark, pid),
        [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
    );
    // A note with the running turn's input, as a worker sends it just before the CLI
    // reads that input: the supervisor has it whole.
    let note = AgentNote {
        busy: true,
        input: Some(std::sync::Arc::new(crate::protocol::ServerMsg::Message {
            message_type: crate::protocol::MessageType::UserInput,
            content: "the input \u{1F600} of the running turn".into(),
            timestamp: 1,
            session_id: "s1".into(),
            client_message_id: Some("m1".into()),
            attachments: vec![],
        })),
        ..Default::default()
    };
    assert!(
        link.note(&mark, note.clone()).await.unwrap(),
        "the note went"
    );
    // The worker's own ends go (as in a `kill -9`), and so does its link.
    drop((stdin, stdout, stderr, link));
    let mut kept = keeping.finish().await.kept;
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept = kept.pop().unwrap();
    assert_eq!(kept.agent, agent(&mark, pid));
    assert_eq!(kept.note, note);
    // Still the same process, and it still answers: its stdin never closed.
    assert!(child.try_wait().unwrap().is_none(), "the CLI lives on");
    let mut input = pipe::Sender::from_owned_fd(kept.pipes.stdin).unwrap();
    let mut output = BufReader::new(pipe::Receiver::from_owned_fd(kept.pipes.stdout).unwrap());
    input.write_all(b"still here\n").await.unwrap();
    let mut line = String::new();
    output.read_line(&mut line).await.unwrap();
    assert_eq!(line, "still here\n");
    // Once the last holder lets go, the CLI sees its stdin close and ends.
    drop(input);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    assert!(status.unwrap().unwrap().success());
}

#[tokio::test]
async fn a_cli_the_worker_released_is_no_longer_held_and_sees_its_stdin_close() {
    let dir = tempfile::tempdir().unwrap();
    let (keeping, link) = keeper_and_link(&dir, &worker("release"), std::process::id()).await;
    let (link, _adopted) = link.unwrap();
    let mark = format!("{}.s1.1", worker("release"));
    let mut child = cat(&mark);
    let pid = child.id().unwrap();
    link.keep(agent(&mark, pid), pipes(&child));
    link.release(&mark);
    // The worker closes its end: with the keeper's copy gone, `cat` sees EOF and exits.
    drop(child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    assert!(status
        .expect("cat saw no EOF: the keeper still holds its stdin")
        .unwrap()
        .success());
    drop(link);
    assert!(keeping.finish().await.kept.is_empty());
}

#[tokio::test]
async fn nobody_but_the_worker_may_connect_and_what_a_stranger_sends_is_not_held() {
    let dir = tempfile::tempdir().unwrap();
    // The keeper waits for pid 1; this test process is a stranger (an agent's tool).
    let (keeping, link) = keeper_and_link(&dir, &worker("stranger"), 1).await;
    let (link, _adopted) = link.unwrap();
    let mark = format!("{}.s1.1", worker("stranger"));
    let mut child = cat(&mark);
    link.keep(agent(&mark, child.id().unwrap()), pipes(&child));
    drop(link);
    assert!(
        keeping.finish().await.kept.is_empty(),
        "a stranger's CLI is not held"
    );
    process::kill_group(&mut child).await.unwrap();
}

#[tokio::test]
async fn a_worker_cannot_have_the_keeper_hold_what_is_not_its_own_cli() {
    let dir = tempfile::tempdir().unwrap();
    let me = worker("claims");
    let (keeping, link) = keeper_and_link(&dir, &me, std::process::id()).await;
    let (link, _adopted) = link.unwrap();
    // A mark of another worker (the keeper would kill by it), a process that is not the
    // worker's child, one whose start time is not its own, and a mark that is the
    // worker's own rather than one of its CLIs'.
    let other = format!("{me}x.s1.1");
    let mut theirs = cat(&other);
    let mut ours = cat(&format!("{me}.s1.1"));
    // This test's own parent (whatever runs it) is no child of this "worker".
    let stranger = nix::unistd::getppid().as_raw() as u32;
    link.keep(agent(&other, theirs.id().unwrap()), pipes(&theirs));
    link.keep(agent(&format!("{me}.s1.2"), stranger), pipes(&ours));
    let mut wrong_start = agent(&format!("{me}.s1.1"), ours.id().unwrap());
    wrong_start.start_ticks = wrong_start.start_ticks.map(|t| t + 1);
    link.keep(wrong_start, pipes(&ours));
    link.keep(agent(&me, ours.id().unwrap()), pipes(&ours));
    // Its own child, but with files where its pipes should be.
    let mut files = cat(&format!("{me}.s2.1"));
    let file = tempfile::tempfile().unwrap();
    link.keep(
        agent(&format!("{me}.s2.1"), files.id().unwrap()),
        [file.as_fd(), file.as_fd(), file.as_fd()],
    );
    // And the one that is its own, to show the others were refused, not lost; then the
    // same process again under another mark.
    link.keep(
        agent(&format!("{me}.s1.1"), ours.id().unwrap()),
        pipes(&ours),
    );
    link.keep(
        agent(&format!("{me}.s1.3"), ours.id().unwrap()),
        pipes(&ours),
    );
    drop(link);
    let kept = keeping.finish().await.kept;
    let marks: Vec<&str> = kept.iter().map(|k| k.agent.mark.as_str()).collect();
    assert_eq!(marks, [format!("{me}.s1.1")]);
    for child in [&mut theirs, &mut ours, &mut files] {
        process::kill_group(child).await.unwrap();
    }
}

#[tokio::test]
async fn a_link_refuses_a_keeper_that_is_not_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.sock");
    // Bound by this process, which is not its own parent: an impostor's socket.
    let _listener = tokio_seqpacket::UnixSeqpacketListener::bind(&path).unwrap();
    let err = Link::connect(&path, "w").await.unwrap_err();
    assert!(matches!(err, link::LinkError::Impostor { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("not held by this worker's supervisor"));
    let missing = Link::connect(&dir.path().join("none.sock"), "w")
        .await
        .unwrap_err();
    assert!(
        matches!(missing, link::LinkError::Connect { .. }),
        "{missing}"
    );
}

#[tokio::test]
async fn malformed_messages_are_refused_and_their_descriptors_closed() {
    let (a, b) = UnixSeqpacket::pair().unwrap();
    let raw = async |body: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]| {
        let mut space = [0u8; 128];
        let mut ancillary = AncillaryMessageWriter::new(&mut space);
        if !fds.is_empty() {
            ancillary.add_fds(fds).unwrap();
        }
        a.send_vectored_with_ancillary(&[IoSlice::new(body)], &mut ancillary)
            .await
            .unwrap();
    };
    let (reader, writer) = std::io::pipe().unwrap();
    // A `keep` with one descriptor instead of three.
    let keep = serde_json::to_vec(&Msg::Keep {
        agent: agent("m", std::process::id()),
    })
    .unwrap();
    raw(&keep, &[writer.as_fd()]).await;
    let err = recv(&b).await.unwrap_err();
    assert!(matches!(err, WireError::Malformed(_)), "{err}");
    // Not JSON, and JSON that is not ours.
    raw(b"\xff\xfe not json", &[]).await;
    assert!(matches!(recv(&b).await, Err(WireError::Invalid(_))));
    raw(br#"{"op":"format_disk"}"#, &[]).await;
    assert!(matches!(recv(&b).await, Err(WireError::Invalid(_))));
    // A `release` carrying a descriptor it should not.
    let release = serde_json::to_vec(&Msg::Release { mark: "m".into() }).unwrap();
    raw(&release, &[writer.as_fd()]).await;
    assert!(matches!(recv(&b).await, Err(WireError::Malformed(_))));
    // The refused descriptors were closed here: with ours gone too, the reader sees EOF.
    drop(writer);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut &reader, &mut rest).unwrap();
    assert!(rest.is_empty());
    // And a good message still goes through after all that.
    let note = Msg::Note {
        mark: "m".into(),
        note: AgentNote::default(),
    };
    send(&a, &note, &[]).await.unwrap();
    assert_eq!(recv(&b).await.unwrap().unwrap().0, note);
    drop(a);
    assert!(recv(&b).await.unwrap().is_none(), "closed");
}

#[tokio::test]
async fn orphans_are_adopted_or_killed_and_a_successor_waits_for_the_killing() {
    let mark = format!("orphan-{}.s1.1", std::process::id());
    let mut child = cat(&mark);
    let pid = child.id().unwrap();
    let [stdin, stdout, stderr] = pipes(&child).map(|fd| fd.try_clone_to_owned().unwrap());
    let pipes = Pipes {
        stdin,
        stdout,
        stderr,
    };
    let kept = |pipes| Kept {
        agent: agent(&mark, pid),
        pipes,
        note: AgentNote::default(),
    };
    let orphans = std::sync::Arc::new(Orphans::default());
    orphans.leave(7, vec![kept(pipes)]);
    assert_eq!(orphans.pending().len(), 1, "a successor would wait");
    // Adopted: taken whole, nothing to wait for, nothing killed.
    let taken = orphans.take(7);
    assert_eq!(taken.len(), 1);
    assert!(orphans.pending().is_empty());
    assert!(child.try_wait().unwrap().is_none());
    // Left again, then abandoned: killed (by its mark), and the token says when.
    orphans.leave(8, taken);
    let gone = orphans.pending();
    orphans.abandon(8);
    orphans.abandon(8); // a second verdict changes nothing
    assert!(
        orphans.take(8).is_empty(),
        "being killed: not to be adopted"
    );
    tokio::time::timeout(Duration::from_secs(10), gone[0].cancelled())
        .await
        .expect("the orphans are killed");
    let status = child.wait().await.unwrap();
    assert!(status.to_string().contains("signal: 9"), "{status}");
    assert!(orphans.take(8).is_empty());
    assert!(orphans.pending().is_empty());
}

#[tokio::test(start_paused = true)]
async fn orphans_nobody_decides_on_are_killed_after_the_deadline() {
    let mark = format!("undecided-{}.s1.1", std::process::id());
    let mut child = cat(&mark);
    let pipes = Pipes {
        stdin: child.stdin.take().unwrap().into_owned_fd().unwrap(),
        stdout: child.stdout.take().unwrap().into_owned_fd().unwrap(),
        stderr: child.stderr.take().unwrap().into_owned_fd().unwrap(),
    };
    let kept = Kept {
        agent: agent(&mark, child.id().unwrap()),
        pipes,
        note: AgentNote::default(),
    };
    let orphans = std::sync::Arc::new(Orphans::default());
    orphans.leave(9, vec![kept]);
    let gone = orphans.pending();
    assert_eq!(gone.len(), 1);
    tokio::time::sleep(ADOPTION_DEADLINE / 2).await;
    assert!(!gone[0].is_cancelled(), "a verdict may still come");
    // The clock is paused: it runs ahead to the deadline once everything waits on it.
    tokio::time::timeout(ADOPTION_DEADLINE * 3, gone[0].cancelled())
        .await
        .expect("killed at the deadline");
    assert!(child.wait().await.is_ok());
    assert!(orphans.take(9).is_empty());
}
