//! "Allow always": what a phone's "Always" remembers, and what a remembered rule allows.
//!
//! A rule never allows more than the person read next to the Always button
//! (`permission_request.always`, built by [`Offer`]):
//! - Bash: one simple command, exactly the approved words, or for a `:*` rule (Claude
//!   Code's own suggestion) those words followed by more. A command with any shell
//!   control or expansion syntax matches no rule (`command.rs`).
//! - File edits (Write, Edit, MultiEdit, NotebookEdit): the request's file, or a
//!   directory the phone chose explicitly, as real paths inside the session's directory
//!   (`path.rs`); kept to that session unless the phone asks for the project.
//! - Other tools: Claude Code's suggestion, and only when it matches the approved
//!   request itself (e.g. every use of one MCP tool, said so in words).
//!
//! Session rules are saved with their session (`session/record.rs`), so they survive a
//! worker restart and never reach another session. Project rules live in one file in the
//! config directory (`store.rs`) and apply to every session in that directory. A person
//! lists and removes them all with `chroxy rules` (`listing.rs`).

mod command;
mod listing;
mod offer;
mod path;
mod store;

pub use listing::{list_text, remove, SessionRules};
pub use offer::Offer;
pub use store::{RuleStore, RulesFile};

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::{now_ms, RuleScope};
use crate::store::StoreError;
use command::CommandPattern;

/// Tools that write a file named in their input; their rules name real paths.
const EDIT_TOOLS: &[&str] = &["Write", "Edit", "MultiEdit", "NotebookEdit"];

/// Why a rule could not be read, written or chosen.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// Reading, locking or writing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file is not a rules file; it is left untouched.
    #[error("{path} is not a valid rules file ({message}); fix it or move it away (no rule is applied or saved until then)")]
    Invalid {
        /// The rules file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A person named a project directory that is not there.
    #[error("{} does not exist", path.display())]
    NoProject {
        /// The directory as given.
        path: PathBuf,
        /// Why it could not be resolved.
        source: std::io::Error,
    },
    /// No rule is written like the one a person asked to remove.
    #[error("no rule `{0}` found; `chroxy rules list` shows them")]
    NotFound(String),
    /// The `directory` a phone chose for "Always" cannot be used.
    #[error("`directory` {why}; nothing was remembered and the prompt still waits")]
    Directory {
        /// What is wrong with it, naming the constraint (never echoing the value).
        why: String,
    },
}

impl RulesError {
    /// A `directory` sent for a request that has no file to widen.
    pub fn not_an_edit() -> Self {
        Self::Directory {
            why: format!(
                "applies only to file edits ({}) of a file inside the session's directory",
                EDIT_TOOLS.join(", ")
            ),
        }
    }
}

/// One remembered permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Tool name as the CLI names it (`Bash`, `Write`, …).
    pub tool: String,
    /// What the rule is limited to: a command (`touch made.txt`, or `npm run test:*`
    /// for those words followed by more), a real file path, or a real directory path
    /// ending in `/`. `None` allows every use of a tool other than Bash and the edit
    /// tools (for those it allows nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: u64,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.content {
            Some(c) => write!(f, "{}({c})", self.tool),
            None => f.write_str(&self.tool),
        }
    }
}

/// What a rule's content means for its tool.
enum Pattern {
    Command(CommandPattern),
    File(PathBuf),
    Dir(PathBuf),
    /// Every use of the tool.
    Tool,
    /// The input's subject field is exactly this.
    Exact(String),
    /// Allows nothing, for this reason.
    Inert(&'static str),
}

impl Rule {
    fn new(tool: &str, content: Option<String>) -> Self {
        Self {
            tool: tool.to_owned(),
            content,
            created_at: now_ms(),
        }
    }

    fn pattern(&self) -> Pattern {
        let edit = EDIT_TOOLS.contains(&self.tool.as_str());
        match (self.tool.as_str(), self.content.as_deref()) {
            ("Bash", Some(c)) => CommandPattern::parse(c)
                .map_or(Pattern::Inert("not one simple command"), Pattern::Command),
            ("Bash", None) => Pattern::Inert("it would allow every command"),
            (_, Some(c)) if edit && !Path::new(c).is_absolute() => {
                Pattern::Inert("not an absolute path")
            }
            (_, Some(c)) if edit && c.ends_with('/') => Pattern::Dir(PathBuf::from(c)),
            (_, Some(c)) if edit => Pattern::File(PathBuf::from(c)),
            // Rules from before edits were narrowed to files.
            (_, None) if edit => Pattern::Inert("it would allow every file"),
            (_, None) => Pattern::Tool,
            (_, Some(c)) => Pattern::Exact(c.to_owned()),
        }
    }

    /// Whether this rule allows `tool` with `input` in a session working in `cwd`.
    pub fn allows(&self, tool: &str, input: &Value, cwd: &Path) -> bool {
        if self.tool != tool {
            return false;
        }
        match self.pattern() {
            Pattern::Command(pattern) => {
                // A command approved to run in Claude Code's sandbox is not approved
                // to run outside it.
                input.get("dangerouslyDisableSandbox") != Some(&Value::Bool(true))
                    && input
                        .get("command")
                        .and_then(Value::as_str)
                        .is_some_and(|c| pattern.allows(c))
            }
            Pattern::File(file) => edited_file(tool, input, cwd).is_some_and(|real| real == file),
            Pattern::Dir(dir) => {
                // The directory itself must (still) be a real one inside `cwd`.
                path::real_inside(cwd, &dir).as_deref() == Some(dir.as_path())
                    && edited_file(tool, input, cwd).is_some_and(|real| path::covers(&dir, &real))
            }
            Pattern::Tool => true,
            Pattern::Exact(content) => {
                ["command", "file_path", "url", "pattern", "path"]
                    .iter()
                    .find_map(|k| input.get(*k).and_then(Value::as_str))
                    == Some(content.as_str())
            }
            Pattern::Inert(_) => false,
        }
    }

    /// Why this rule allows nothing (a rule saved by an older build), if it does not.
    pub fn inert(&self) -> Option<&'static str> {
        match self.pattern() {
            Pattern::Inert(why) => Some(why),
            _ => None,
        }
    }

    /// What this rule allows and where, in words for the person deciding.
    pub fn explain(&self, scope: RuleScope, cwd: &Path) -> String {
        let what = match self.pattern() {
            Pattern::Command(pattern) => pattern.describe(),
            Pattern::File(file) => format!("{} on the file {}", self.tool, file.display()),
            Pattern::Dir(dir) => format!(
                "{} on any file under {} (except inside {})",
                self.tool,
                dir.display(),
                path::guarded()
            ),
            Pattern::Tool => format!("every use of {}", self.tool),
            Pattern::Exact(content) => format!("{} with exactly `{content}`", self.tool),
            Pattern::Inert(why) => format!("nothing ({why})"),
        };
        match scope {
            RuleScope::Session => format!("{what}, in this session only"),
            RuleScope::Project => format!(
                "{what}, in every session in {}, until removed with `chroxy rules remove`",
                cwd.display()
            ),
        }
    }

    /// Whether both rules allow the same (their dates aside).
    pub fn same_as(&self, other: &Rule) -> bool {
        self.tool == other.tool && self.content == other.content
    }
}

/// The real file an edit tool's request would write, if it is inside `cwd`.
fn edited_file(tool: &str, input: &Value, cwd: &Path) -> Option<PathBuf> {
    let key = if tool == "NotebookEdit" {
        "notebook_path"
    } else {
        "file_path"
    };
    let file = input.get(key)?.as_str().filter(|f| !f.is_empty())?;
    path::real_inside(cwd, Path::new(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(tool: &str, content: Option<&str>) -> Rule {
        Rule {
            tool: tool.into(),
            content: content.map(str::to_owned),
            created_at: 0,
        }
    }

    #[test]
    fn old_rules_are_narrowed_or_inert() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        let write = json!({"file_path": cwd.join("a.txt"), "content": ""});
        for (tool, content) in [
            ("Write", None),
            ("Edit", None),
            ("Bash", None),
            ("Write", Some("relative.txt")),
            ("Bash", Some("a && b")),
        ] {
            let r = rule(tool, content);
            assert!(r.inert().is_some(), "{r}");
            assert!(!r.allows(tool, &write, cwd), "{r}");
            assert!(!r.allows(tool, &json!({"command": "a && b"}), cwd), "{r}");
        }
        let prefix = rule("Bash", Some("npm run test:*"));
        assert!(prefix.inert().is_none());
        assert!(prefix.allows("Bash", &json!({"command": "npm run test --watch"}), cwd));
        assert!(!prefix.allows("Bash", &json!({"command": "npm run testfoo"}), cwd));
    }
}
