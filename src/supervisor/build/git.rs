//! The git a source build needs: where the tree's top is, which commit a revision
//! names, whether the tree has uncommitted changes, a snapshot commit of those changes
//! (made through an index of our own, so the person's index and files stay as they
//! are), and a worktree of a commit that is added and removed again.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::BuildError;

/// A git command that takes longer than this is stuck (a lock, a prompt, a hook).
const GIT_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of git's complaint an error carries.
const MAX_DETAIL: usize = 600;

/// Git on one repository.
#[derive(Debug, Clone)]
pub(super) struct Git {
    program: PathBuf,
    /// The tree's top directory.
    top: PathBuf,
}

impl Git {
    /// Git on the repository holding `dir`; `dir` must be inside its working tree.
    pub(super) async fn open(dir: &Path) -> Result<Self, BuildError> {
        let program = which::which("git").map_err(|_| BuildError::ToolMissing {
            tool: "git",
            hint: "install git (Debian: apt install git)",
        })?;
        if !dir.is_dir() {
            return Err(BuildError::NotARepository {
                dir: dir.to_path_buf(),
                detail: "no such directory".into(),
            });
        }
        let probe = Self {
            program,
            top: dir.to_path_buf(),
        };
        let top = probe
            .run(["rev-parse", "--show-toplevel"], None)
            .await
            .map_err(|detail| BuildError::NotARepository {
                dir: dir.to_path_buf(),
                detail,
            })?;
        Ok(Self {
            top: PathBuf::from(top.trim_end_matches('\n')),
            ..probe
        })
    }

    /// The working tree's top directory.
    pub(super) fn top(&self) -> &Path {
        &self.top
    }

    /// The full commit id `rev` names.
    pub(super) async fn resolve(&self, rev: &str) -> Result<String, BuildError> {
        let unknown = || BuildError::UnknownRevision { rev: rev.into() };
        // A revision is a name, never an option or a second argument.
        if rev.is_empty() || rev.len() > 256 || rev.starts_with('-') || rev.contains(['\0', '\n']) {
            return Err(unknown());
        }
        let wanted = format!("{rev}^{{commit}}");
        let args = [
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &wanted,
        ];
        let out = self.run(args, None).await.map_err(|_| unknown())?;
        let commit = out.trim().to_owned();
        if commit.len() < 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        Ok(commit)
    }

    /// The paths with uncommitted changes, untracked files included (ignored ones not).
    pub(super) async fn changes(&self) -> Result<Vec<String>, BuildError> {
        let args = ["status", "--porcelain=v1", "-z", "--untracked-files=all"];
        let out = self
            .run(args, None)
            .await
            .map_err(|d| self.failed("git status", d))?;
        Ok(out
            .split('\0')
            .filter(|entry| entry.len() > 3)
            .map(|entry| entry[3..].to_owned())
            .collect())
    }

    /// A commit of the tree as it is on disk (tracked changes and untracked files that
    /// are not ignored) on top of `base`, made in `index` (a file of ours): the person's
    /// index, branch and files are not touched.
    pub(super) async fn snapshot(&self, index: &Path, base: &str) -> Result<String, BuildError> {
        let _ = std::fs::remove_file(index);
        let step = |what: &'static str| move |d| self.failed(what, d);
        self.run(["read-tree", base], Some(index))
            .await
            .map_err(step("git read-tree"))?;
        self.run(["add", "--all", "--", "."], Some(index))
            .await
            .map_err(step("git add"))?;
        let tree = self
            .run(["write-tree"], Some(index))
            .await
            .map_err(step("git write-tree"))?;
        let _ = std::fs::remove_file(index);
        let message = "chroxy deploy --allow-dirty: the tree's uncommitted changes";
        let args = ["commit-tree", tree.trim(), "-p", base, "-m", message];
        let commit = self
            .run(args, None)
            .await
            .map_err(step("git commit-tree"))?;
        Ok(commit.trim().to_owned())
    }

    /// Checks `commit` out, detached, into `tree` (a new directory).
    pub(super) async fn add_worktree(&self, tree: &Path, commit: &str) -> Result<(), BuildError> {
        let tree = tree.as_os_str();
        let args: [&OsStr; 6] = [
            "worktree".as_ref(),
            "add".as_ref(),
            "--detach".as_ref(),
            "--force".as_ref(),
            tree,
            commit.as_ref(),
        ];
        self.run(args, None)
            .await
            .map(drop)
            .map_err(|d| self.failed("git worktree add", d))
    }

    /// Removes the worktree at `tree` and git's record of it (also of one whose
    /// directory is already gone).
    pub(super) async fn remove_worktree(&self, tree: &Path) {
        let args: [&OsStr; 4] = [
            "worktree".as_ref(),
            "remove".as_ref(),
            "--force".as_ref(),
            tree.as_os_str(),
        ];
        if let Err(detail) = self.run(args, None).await {
            tracing::debug!(%detail, "git worktree remove");
        }
        let _ = std::fs::remove_dir_all(tree);
        if let Err(detail) = self.run(["worktree", "prune"], None).await {
            tracing::warn!(%detail, "git worktree prune");
        }
    }

    fn failed(&self, what: &'static str, detail: String) -> BuildError {
        BuildError::Git {
            what,
            dir: self.top.clone(),
            detail,
        }
    }

    /// Runs git in the tree; its stdout, or what it said on stderr.
    async fn run<I, S>(&self, args: I, index: Option<&Path>) -> Result<String, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.program);
        cmd.arg("-C").arg(&self.top).args(args);
        // What the caller's environment says of some other repository is not ours.
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
        ] {
            cmd.env_remove(var);
        }
        if let Some(index) = index {
            cmd.env("GIT_INDEX_FILE", index);
        }
        // No prompt for credentials, messages we can show, and an identity for the
        // snapshot commit whatever the person's git config says.
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .env("GIT_AUTHOR_NAME", "chroxy deploy")
            .env("GIT_AUTHOR_EMAIL", "chroxy@localhost")
            .env("GIT_COMMITTER_NAME", "chroxy deploy")
            .env("GIT_COMMITTER_EMAIL", "chroxy@localhost")
            .stdin(std::process::Stdio::null());
        crate::process::own(&mut cmd);
        let out = match tokio::time::timeout(GIT_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(err)) => return Err(format!("cannot run git: {err}")),
            Err(_) => return Err(format!("git took longer than {} s", GIT_TIMEOUT.as_secs())),
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.trim();
        let mut detail = if said.is_empty() {
            crate::process::describe(&out.status)
        } else {
            said.to_owned()
        };
        if detail.len() > MAX_DETAIL {
            let cut = (0..=MAX_DETAIL)
                .rev()
                .find(|&i| detail.is_char_boundary(i))
                .unwrap_or(0);
            detail.truncate(cut);
            detail.push('…');
        }
        Err(detail)
    }
}
