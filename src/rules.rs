//! "Allow always": permission rules remembered per project directory.
//!
//! When a phone answers `allowAlways`, the request becomes a rule built from the CLI's own
//! `permission_suggestions` (`Bash(touch made.txt)`), or just the tool for edit tools
//! (`Write`). Later matching requests — in any session on the same directory, in any
//! worker, after restarts — are allowed without asking. Rules live in one JSON file in
//! the config directory (never in `~/.claude`), read-modify-written under an advisory
//! lock and replaced atomically, so concurrent writers from several processes never
//! lose a rule or leave a torn file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::now_ms;
use crate::store::{atomic_write, FileLock, Paths, StoreError};

/// Tools whose "always" means the tool as a whole (the CLI suggests a mode, not a rule).
const EDIT_TOOLS: &[&str] = &["Write", "Edit", "MultiEdit", "NotebookEdit"];

/// Why the rules could not be read or written.
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
}

/// One remembered permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Tool name as the CLI names it (`Bash`, `Write`, …).
    pub tool: String,
    /// What the rule is limited to (`touch made.txt`; a trailing `:*` matches a prefix);
    /// `None` allows every use of the tool.
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

impl Rule {
    /// The rule an "always" answer creates for this request, from the CLI's suggestions;
    /// `None` when the CLI suggested nothing a rule can express.
    pub fn from_request(tool: &str, suggestions: &Value) -> Option<Rule> {
        let suggested = suggestions.as_array().into_iter().flatten().find_map(|s| {
            if s.get("type")?.as_str()? != "addRules"
                || s.get("behavior").and_then(Value::as_str) != Some("allow")
            {
                return None;
            }
            s.get("rules")?.as_array()?.iter().find_map(|r| {
                (r.get("toolName")?.as_str()? == tool).then(|| {
                    r.get("ruleContent")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
            })
        });
        match suggested {
            Some(content) => Some(Rule {
                tool: tool.to_owned(),
                content,
                created_at: now_ms(),
            }),
            None if EDIT_TOOLS.contains(&tool) => Some(Rule {
                tool: tool.to_owned(),
                content: None,
                created_at: now_ms(),
            }),
            None => None,
        }
    }

    /// Whether this rule allows `tool` with `input`.
    pub fn allows(&self, tool: &str, input: &Value) -> bool {
        if self.tool != tool {
            return false;
        }
        let Some(content) = &self.content else {
            return true;
        };
        // The content is matched against the field the CLI's own rules use per tool.
        let subject = ["command", "file_path", "url", "pattern", "path"]
            .iter()
            .find_map(|k| input.get(*k).and_then(Value::as_str));
        let Some(subject) = subject else { return false };
        match content.strip_suffix(":*") {
            Some(prefix) => subject.starts_with(prefix),
            None => subject == content,
        }
    }

    fn same_scope(&self, other: &Rule) -> bool {
        self.tool == other.tool && self.content == other.content
    }
}

/// The file's shape: project directory → its rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RulesFile {
    version: u32,
    /// Rules by absolute project directory.
    pub projects: BTreeMap<PathBuf, Vec<Rule>>,
}

/// Where the rules live; cheap to clone, holds no open files.
#[derive(Debug, Clone)]
pub struct RuleStore {
    file: PathBuf,
    lock: PathBuf,
}

impl RuleStore {
    /// The store of this Chroxy home.
    pub fn new(paths: &Paths) -> Self {
        Self {
            file: paths.config_dir().join("permission-rules.json"),
            lock: paths.lock_file("permission-rules"),
        }
    }

    /// The rules file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Reads every rule. A missing file is no rules.
    pub fn load(&self) -> Result<RulesFile, RulesError> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RulesError::Invalid {
                path: self.file.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RulesFile {
                version: 1,
                ..Default::default()
            }),
            Err(e) => Err(StoreError::io("reading", &self.file, e).into()),
        }
    }

    /// The first rule of `project` that allows this request.
    pub fn matching(
        &self,
        project: &Path,
        tool: &str,
        input: &Value,
    ) -> Result<Option<Rule>, RulesError> {
        let file = self.load()?;
        Ok(file
            .projects
            .get(project)
            .and_then(|rules| rules.iter().find(|r| r.allows(tool, input)).cloned()))
    }

    /// Adds a rule for `project` unless an equal one exists; true if it was added.
    pub fn add(&self, project: &Path, rule: Rule) -> Result<bool, RulesError> {
        self.modify(|file| {
            let rules = file.projects.entry(project.to_path_buf()).or_default();
            if rules.iter().any(|r| r.same_scope(&rule)) {
                return false;
            }
            rules.push(rule);
            true
        })
    }

    /// Removes rules whose text (as `list` shows it) is `rule`, in `project` or in every
    /// project; returns how many were removed.
    pub fn remove(&self, project: Option<&Path>, rule: &str) -> Result<usize, RulesError> {
        self.modify(|file| {
            let mut removed = 0;
            for (dir, rules) in file.projects.iter_mut() {
                if project.is_some_and(|p| p != dir) {
                    continue;
                }
                let before = rules.len();
                rules.retain(|r| r.to_string() != rule);
                removed += before - rules.len();
            }
            file.projects.retain(|_, rules| !rules.is_empty());
            removed
        })
    }

    /// Read-modify-write under the inter-process lock; written only if `f` changed it.
    fn modify<T>(&self, f: impl FnOnce(&mut RulesFile) -> T) -> Result<T, RulesError> {
        let mut lock = FileLock::open(&self.lock)?;
        lock.exclusive(|| {
            let mut file = self.load()?;
            let before = file.clone();
            let out = f(&mut file);
            if file != before {
                file.version = 1;
                // Plain maps and strings serialize infallibly.
                let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
                atomic_write(&self.file, &bytes)?;
            }
            Ok(out)
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bash_suggestions() -> Value {
        json!([
            {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "touch made.txt"}], "behavior": "allow", "destination": "localSettings"},
            {"type": "addDirectories", "directories": ["/p"], "destination": "session"},
            {"type": "setMode", "mode": "acceptEdits", "destination": "session"}
        ])
    }

    #[test]
    fn rules_come_from_the_cli_suggestions() {
        let r = Rule::from_request("Bash", &bash_suggestions()).unwrap();
        assert_eq!(r.to_string(), "Bash(touch made.txt)");
        assert!(r.allows("Bash", &json!({"command": "touch made.txt"})));
        assert!(!r.allows("Bash", &json!({"command": "rm -rf /"})));
        assert!(!r.allows("Write", &json!({"command": "touch made.txt"})));
        let w = Rule::from_request(
            "Write",
            &json!([{"type": "setMode", "mode": "acceptEdits", "destination": "session"}]),
        )
        .unwrap();
        assert_eq!(w.to_string(), "Write");
        assert!(w.allows("Write", &json!({"file_path": "/any"})));
        assert!(Rule::from_request("WebFetch", &json!([])).is_none());
    }

    #[test]
    fn prefix_rules() {
        let r = Rule {
            tool: "Bash".into(),
            content: Some("npm run test:*".into()),
            created_at: 0,
        };
        assert!(r.allows("Bash", &json!({"command": "npm run test -- --watch"})));
        assert!(!r.allows("Bash", &json!({"command": "npm publish"})));
    }

    #[test]
    fn rules_are_per_project_deduplicated_and_removable() {
        let dir = tempfile::tempdir().unwrap();
        let store = RuleStore::new(&Paths::under(dir.path()));
        let rule = Rule::from_request("Bash", &bash_suggestions()).unwrap();
        let input = json!({"command": "touch made.txt"});
        assert!(store.add(Path::new("/p"), rule.clone()).unwrap());
        assert!(
            !store.add(Path::new("/p"), rule.clone()).unwrap(),
            "duplicate added"
        );
        assert!(store
            .matching(Path::new("/p"), "Bash", &input)
            .unwrap()
            .is_some());
        assert!(store
            .matching(Path::new("/other"), "Bash", &input)
            .unwrap()
            .is_none());
        assert_eq!(store.remove(None, "Bash(touch made.txt)").unwrap(), 1);
        assert!(store
            .matching(Path::new("/p"), "Bash", &input)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_corrupt_file_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = RuleStore::new(&Paths::under(dir.path()));
        std::fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        std::fs::write(store.path(), b"{oops").unwrap();
        let err = store
            .add(
                Path::new("/p"),
                Rule {
                    tool: "Write".into(),
                    content: None,
                    created_at: 0,
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("permission-rules.json"), "{err}");
        assert_eq!(std::fs::read(store.path()).unwrap(), b"{oops");
    }
}
