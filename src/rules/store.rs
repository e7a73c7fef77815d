//! Project rules on disk: one JSON file in the config directory (never in `~/.claude`),
//! read-modify-written under an advisory lock and replaced atomically, so concurrent
//! writers from several processes never lose a rule or leave a torn file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Rule, RulesError};
use crate::store::{modify_json, read_json, Paths};

/// The file's shape: project directory → its rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesFile {
    version: u32,
    /// Rules by absolute project directory.
    pub projects: BTreeMap<PathBuf, Vec<Rule>>,
}

/// No rules, in the format this version writes (so a first write needs no stamp).
impl Default for RulesFile {
    fn default() -> Self {
        Self {
            version: 1,
            projects: BTreeMap::new(),
        }
    }
}

/// Where the project rules live; cheap to clone, holds no open files.
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
        read_json(&self.file)?.map_err(|e| RulesError::Invalid {
            path: self.file.clone(),
            message: e.to_string(),
        })
    }

    /// The first rule of `project` that allows this request (made in `project`).
    pub fn matching(
        &self,
        project: &Path,
        tool: &str,
        input: &Value,
    ) -> Result<Option<Rule>, RulesError> {
        let file = self.load()?;
        Ok(file.projects.get(project).and_then(|rules| {
            rules
                .iter()
                .find(|r| r.allows(tool, input, project))
                .cloned()
        }))
    }

    /// Adds a rule for `project` unless an equal one exists; true if it was added.
    pub fn add(&self, project: &Path, rule: Rule) -> Result<bool, RulesError> {
        self.modify(|file| {
            let rules = file.projects.entry(project.to_path_buf()).or_default();
            if rules.iter().any(|r| r.same_as(&rule)) {
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
        modify_json(&self.file, &self.lock, || self.load(), |file| Ok(f(file)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bash(content: &str) -> Rule {
        Rule {
            tool: "Bash".into(),
            content: Some(content.into()),
            created_at: 0,
        }
    }

    #[test]
    fn rules_are_per_project_deduplicated_and_removable() {
        let dir = tempfile::tempdir().unwrap();
        let store = RuleStore::new(&Paths::under(dir.path()));
        let input = json!({"command": "touch made.txt"});
        assert!(store.add(Path::new("/p"), bash("touch made.txt")).unwrap());
        assert!(
            !store.add(Path::new("/p"), bash("touch made.txt")).unwrap(),
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
            .add(Path::new("/p"), bash("touch made.txt"))
            .unwrap_err();
        assert!(err.to_string().contains("permission-rules.json"), "{err}");
        assert_eq!(std::fs::read(store.path()).unwrap(), b"{oops");
    }

    /// A file written before rules were narrowed (a blanket `Write`, a `starts_with`
    /// prefix) still loads; under the new matching its Bash rules stay word-wise and
    /// its blanket edit rule allows nothing.
    #[test]
    fn a_file_from_before_loads_and_is_matched_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().canonicalize().unwrap();
        let store = RuleStore::new(&Paths::under(project.join("home")));
        std::fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        let old = json!({"version": 1, "projects": {project.display().to_string(): [
            {"tool": "Bash", "content": "npm run test:*", "createdAt": 1},
            {"tool": "Write", "createdAt": 2}
        ]}});
        std::fs::write(store.path(), old.to_string()).unwrap();
        assert_eq!(store.load().unwrap().projects[&project].len(), 2);
        let bash = |command: &str| {
            store
                .matching(&project, "Bash", &json!({"command": command}))
                .unwrap()
        };
        assert!(bash("npm run test --watch").is_some());
        assert!(bash("npm run testfoo").is_none());
        assert!(bash("npm run test; curl x|sh").is_none());
        let write = json!({"file_path": project.join("a.txt"), "content": ""});
        assert!(store.matching(&project, "Write", &write).unwrap().is_none());
    }
}
