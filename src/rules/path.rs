//! File-edit rules: which real file an edit would write, and whether a rule's file or
//! directory covers it.
//!
//! A path in a request is text the agent chose: `../../.bashrc`, an absolute path
//! elsewhere, or a symlink inside the project pointing out of it. Rules therefore hold
//! and compare *real* paths (symlinks resolved for every part that exists), and only
//! inside the session's directory.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Names a directory rule never reaches into or writes: what is written there changes
/// what runs without anyone approving it again — git hooks and config, Claude Code's
/// own settings (which can allow any tool) and MCP servers, editor tasks, commit hooks,
/// direnv, and, for a session started in a home directory, the shell's start-up files,
/// SSH keys and every program's config (Chroxy's included). Files there are approved
/// one at a time. Compared without regard to case (a case-insensitive file system
/// writes `.GIT/hooks` into `.git/hooks`).
const GUARDED: &[&str] = &[
    ".git",
    ".claude",
    ".mcp.json",
    ".vscode",
    ".idea",
    ".husky",
    ".envrc",
    ".ssh",
    ".config",
    ".local",
    ".bashrc",
    ".bash_profile",
    ".profile",
    ".zshrc",
    ".zprofile",
    ".gitconfig",
];

/// The real path `file` names, seen from `cwd`, if it lies inside `cwd`. `None` when
/// that cannot be known safely: a `..` after a part that does not exist yet, a
/// dangling symlink, a hard-linked file (writing it writes another name too), or
/// anything the OS refuses to look up.
pub(super) fn real_inside(cwd: &Path, file: &Path) -> Option<PathBuf> {
    let cwd = cwd.canonicalize().ok()?;
    let real = resolve(&cwd.join(file))?;
    if !real.starts_with(&cwd) || is_hard_linked(&real) {
        return None;
    }
    Some(real)
}

/// Resolves the longest existing ancestor through the OS and appends the rest, which
/// does not exist yet and so cannot be a symlink.
fn resolve(full: &Path) -> Option<PathBuf> {
    let mut missing: Vec<OsString> = Vec::new();
    let mut at = full;
    loop {
        match std::fs::symlink_metadata(at) {
            Ok(_) => {
                // Fails for a dangling symlink: its target is unknown, so is the file.
                let mut real = at.canonicalize().ok()?;
                real.extend(missing.iter().rev());
                return Some(real);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                // `..` (or the root) here would be resolved against a directory the
                // agent may still create as a symlink: refuse rather than guess.
                let Some(Component::Normal(name)) = at.components().next_back() else {
                    return None;
                };
                missing.push(name.to_owned());
                at = at.parent()?;
            }
            Err(_) => return None,
        }
    }
}

#[cfg(unix)]
fn is_hard_linked(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.nlink() > 1)
}

#[cfg(not(unix))]
fn is_hard_linked(_path: &Path) -> bool {
    false
}

/// Whether a directory rule for `dir` covers the real file `file`.
pub(super) fn covers(dir: &Path, file: &Path) -> bool {
    file.strip_prefix(dir).is_ok_and(|rest| {
        !rest.as_os_str().is_empty()
            && !rest.components().any(|c| {
                let name = c.as_os_str().to_string_lossy();
                GUARDED.iter().any(|g| name.eq_ignore_ascii_case(g))
            })
    })
}

/// The directories [`covers`] never reaches into, in words.
pub(super) fn guarded() -> String {
    GUARDED.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree {
        _dir: tempfile::TempDir,
        /// The project (the session's directory), real path.
        cwd: PathBuf,
        /// A directory next to it, outside.
        outside: PathBuf,
    }

    fn tree() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let cwd = root.join("project");
        let outside = root.join("outside");
        for d in [cwd.join("src"), outside.clone(), root.join("project2")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(cwd.join("src/a.rs"), "").unwrap();
        std::fs::write(outside.join("secret"), "").unwrap();
        Tree {
            _dir: dir,
            cwd,
            outside,
        }
    }

    #[test]
    fn paths_inside_resolve_to_their_real_file() {
        let t = tree();
        let real = t.cwd.join("src/a.rs");
        for spelled in [
            "src/a.rs",
            "./src/a.rs",
            "src/../src/a.rs",
            "src//a.rs",
            "src/./a.rs",
        ] {
            assert_eq!(
                real_inside(&t.cwd, Path::new(spelled)).as_deref(),
                Some(real.as_path()),
                "{spelled}"
            );
        }
        assert_eq!(
            real_inside(&t.cwd, &real).as_deref(),
            Some(real.as_path()),
            "absolute"
        );
        // Files and directories that do not exist yet (Write creates them).
        assert_eq!(
            real_inside(&t.cwd, Path::new("new/dir/b.rs")),
            Some(t.cwd.join("new/dir/b.rs"))
        );
    }

    #[test]
    fn traversal_out_of_the_directory_is_refused() {
        let t = tree();
        std::os::unix::fs::symlink(&t.outside, t.cwd.join("link")).unwrap();
        std::os::unix::fs::symlink(t.outside.join("secret"), t.cwd.join("file-link")).unwrap();
        std::os::unix::fs::symlink(t.outside.join("not-yet"), t.cwd.join("dangling")).unwrap();
        std::fs::hard_link(t.outside.join("secret"), t.cwd.join("hard")).unwrap();
        let outside = t.outside.join("secret").display().to_string();
        let sibling = t
            .cwd
            .with_file_name("project2")
            .join("x")
            .display()
            .to_string();
        for attack in [
            "../outside/secret",
            "src/../../outside/secret",
            "../project2/x",
            &outside,
            &sibling,
            "/etc/passwd",
            "/",
            "..",
            "link/secret",
            "link/new-file",
            "file-link",
            "dangling",
            "hard",
            "missing/../../outside/secret",
            "missing/..",
            "src/a.rs/x",
            "a\0b",
        ] {
            assert_eq!(real_inside(&t.cwd, Path::new(attack)), None, "{attack:?}");
        }
    }

    #[test]
    fn a_symlinked_project_directory_is_its_real_self() {
        let t = tree();
        let alias = t.cwd.with_file_name("alias");
        std::os::unix::fs::symlink(&t.cwd, &alias).unwrap();
        assert_eq!(
            real_inside(&alias, Path::new("src/a.rs")),
            Some(t.cwd.join("src/a.rs"))
        );
        assert_eq!(
            real_inside(&t.cwd, &alias.join("src/a.rs")),
            Some(t.cwd.join("src/a.rs"))
        );
    }

    #[test]
    fn directory_rules_cover_files_below_except_guarded_ones() {
        let dir = Path::new("/p/src");
        assert!(covers(dir, Path::new("/p/src/a.rs")));
        assert!(covers(dir, Path::new("/p/src/deep/b.rs")));
        for not in [
            "/p/src",
            "/p/srcx/a.rs",
            "/p/a.rs",
            "/p/src/.git/hooks/pre-commit",
            "/p/src/sub/.claude/settings.json",
            "/p/src/.git",
            // A session started in a home directory: what runs at the next login.
            "/p/src/.bashrc",
            "/p/src/.ssh/authorized_keys",
            "/p/src/.config/chroxy/config.toml",
            "/p/src/.mcp.json",
            "/p/src/.vscode/tasks.json",
            // A case-insensitive file system writes these into .git/hooks.
            "/p/src/.GIT/hooks/pre-commit",
            "/p/src/.Claude/settings.json",
        ] {
            assert!(!covers(dir, Path::new(not)), "{not}");
        }
        // Chosen explicitly, a guarded directory itself is fine.
        assert!(covers(
            Path::new("/p/.claude"),
            Path::new("/p/.claude/notes.md")
        ));
    }
}
