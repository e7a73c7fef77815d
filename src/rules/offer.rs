//! What "Always" would remember for one request, worked out when the request arrives
//! (the phone is told exactly that), and the wider rule a phone may name explicitly.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{edited_file, path, Rule, RulesError, EDIT_TOOLS};
use crate::protocol::{AlwaysOffer, RuleScope};

/// What "Always" would remember for one request. Worked out when the request arrives,
/// so the phone is told exactly this, and only this (or a wider rule the phone names
/// explicitly, see [`Offer::choose`]) is ever stored.
#[derive(Debug, Clone)]
pub struct Offer {
    rule: Rule,
    scope: RuleScope,
    /// The real file an edit writes: a directory the phone chooses must contain it.
    file: Option<PathBuf>,
    /// The session's directory, which every rule is kept inside.
    cwd: PathBuf,
}

impl Offer {
    /// The offer for a request from a session working in `cwd`; `None` when no rule can
    /// say exactly what was approved (then "Always" allows once).
    pub fn for_request(tool: &str, input: &Value, suggestions: &Value, cwd: &Path) -> Option<Self> {
        if EDIT_TOOLS.contains(&tool) {
            let file = edited_file(tool, input, cwd)?;
            let rule = Rule::new(tool, Some(file.to_str()?.to_owned()));
            // Every offer allows the request it was made for, and nothing is offered
            // that would not (a path only a directory rule could spell, `/`).
            return rule.allows(tool, input, cwd).then(|| Self {
                rule,
                scope: RuleScope::Session,
                file: Some(file),
                cwd: cwd.to_owned(),
            });
        }
        let rule = suggested(tool, suggestions).find(|r| r.allows(tool, input, cwd))?;
        Some(Self {
            rule,
            scope: RuleScope::Project,
            file: None,
            cwd: cwd.to_owned(),
        })
    }

    /// As the phone sees it in `permission_request.always`.
    pub fn to_wire(&self) -> AlwaysOffer {
        AlwaysOffer {
            rule: self.rule.to_string(),
            scope: self.scope,
            allows: self.rule.explain(self.scope, &self.cwd),
        }
    }

    /// The rule to store for an "Always" answer and how far it reaches: the offer, with
    /// the `scope` and `directory` the phone named instead, once checked.
    pub fn choose(
        &self,
        scope: Option<RuleScope>,
        directory: Option<&str>,
    ) -> Result<(Rule, RuleScope), RulesError> {
        let cwd = &self.cwd;
        let scope = scope.unwrap_or(self.scope);
        let Some(directory) = directory else {
            return Ok((self.rule.clone(), scope));
        };
        let refuse = |why: String| Err(RulesError::Directory { why });
        let Some(file) = &self.file else {
            return Err(RulesError::not_an_edit());
        };
        if !Path::new(directory).is_absolute() {
            return refuse("must be an absolute path".into());
        }
        let Some(real) = path::real_inside(cwd, Path::new(directory)) else {
            return refuse(format!(
                "must be inside this session's directory {} (symlinks resolved)",
                cwd.display()
            ));
        };
        if real.exists() && !real.is_dir() {
            return refuse("must be a directory".into());
        }
        if !path::covers(&real, file) {
            return refuse(format!(
                "must contain {} (files inside {} are approved one at a time)",
                file.display(),
                path::guarded()
            ));
        }
        let Some(real) = real.to_str() else {
            return refuse("resolves to a path that is not UTF-8".into());
        };
        let content = if real.ends_with('/') {
            real.to_owned()
        } else {
            format!("{real}/")
        };
        Ok((Rule::new(&self.rule.tool, Some(content)), scope))
    }
}

/// The rules Claude Code suggested for `tool` in a `can_use_tool` request, in order.
fn suggested<'a>(tool: &'a str, suggestions: &'a Value) -> impl Iterator<Item = Rule> + 'a {
    let field = |v: &'a Value, k: &str| v.get(k).and_then(Value::as_str);
    suggestions
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |s| {
            field(s, "type") == Some("addRules") && field(s, "behavior") == Some("allow")
        })
        .filter_map(|s| s.get("rules")?.as_array())
        .flatten()
        .filter(move |r| field(r, "toolName") == Some(tool))
        .map(move |r| Rule::new(tool, field(r, "ruleContent").map(str::to_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bash_suggestions(content: &str) -> Value {
        json!([
            {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": content}], "behavior": "allow", "destination": "localSettings"},
            {"type": "addDirectories", "directories": ["/p"], "destination": "session"},
            {"type": "setMode", "mode": "acceptEdits", "destination": "session"}
        ])
    }

    /// A project directory with a file, a symlink out of it and a sibling outside.
    struct Project {
        _dir: tempfile::TempDir,
        cwd: PathBuf,
        outside: PathBuf,
    }

    fn project() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let cwd = root.join("project");
        let outside = root.join("outside");
        std::fs::create_dir_all(cwd.join("src")).unwrap();
        std::fs::create_dir_all(cwd.join(".git/hooks")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(cwd.join("src/a.rs"), "").unwrap();
        std::os::unix::fs::symlink(&outside, cwd.join("out")).unwrap();
        Project {
            _dir: dir,
            cwd,
            outside,
        }
    }

    fn write(file: impl AsRef<Path>) -> Value {
        json!({"file_path": file.as_ref(), "content": "x"})
    }

    #[test]
    fn bash_offers_come_from_the_cli_and_match_word_by_word() {
        let p = project();
        let request = json!({"command": "touch made.txt"});
        let offer = Offer::for_request(
            "Bash",
            &request,
            &bash_suggestions("touch made.txt"),
            &p.cwd,
        )
        .unwrap();
        let wire = offer.to_wire();
        assert_eq!(wire.rule, "Bash(touch made.txt)");
        assert_eq!(wire.scope, RuleScope::Project);
        assert!(
            wire.allows
                .starts_with("exactly the command `touch made.txt`, in every session in"),
            "{}",
            wire.allows
        );
        let (r, _) = offer.choose(None, None).unwrap();
        assert!(r.allows("Bash", &request, &p.cwd));
        for other in [
            "rm -rf /",
            "touch made.txt; rm -rf ~",
            "touch made.txt other",
        ] {
            assert!(
                !r.allows("Bash", &json!({"command": other}), &p.cwd),
                "{other}"
            );
        }
        assert!(!r.allows("Write", &request, &p.cwd));
        let unsandboxed = json!({"command": "touch made.txt", "dangerouslyDisableSandbox": true});
        assert!(!r.allows("Bash", &unsandboxed, &p.cwd));
    }

    #[test]
    fn no_offer_when_no_rule_says_exactly_what_was_approved() {
        let p = project();
        let cases = [
            // The CLI's rule for one part of a compound command does not allow the whole.
            (
                "Bash",
                json!({"command": "cd src && npm test"}),
                bash_suggestions("npm test:*"),
            ),
            // A suggested rule that is not one simple command.
            (
                "Bash",
                json!({"command": "echo $(id)"}),
                bash_suggestions("echo $(id)"),
            ),
            // A blanket Bash rule.
            (
                "Bash",
                json!({"command": "ls"}),
                json!([{"type": "addRules", "behavior": "allow", "rules": [{"toolName": "Bash"}]}]),
            ),
            // Nothing suggested.
            (
                "Bash",
                json!({"command": "touch x"}),
                json!([{"type": "setMode", "mode": "acceptEdits"}]),
            ),
            (
                "WebFetch",
                json!({"url": "https://example.com/a"}),
                json!([{"type": "addRules", "behavior": "allow", "rules": [{"toolName": "WebFetch", "ruleContent": "domain:example.com"}]}]),
            ),
            // A deny suggestion is not an allow.
            (
                "Bash",
                json!({"command": "touch x"}),
                json!([{"type": "addRules", "behavior": "deny", "rules": [{"toolName": "Bash", "ruleContent": "touch x"}]}]),
            ),
            // File edits with no usable path never get a blanket rule.
            ("Write", json!({"content": "x"}), json!([])),
            ("Write", json!({"file_path": "", "content": "x"}), json!([])),
            ("Edit", json!({"file_path": 7}), json!([])),
            (
                "NotebookEdit",
                json!({"file_path": p.cwd.join("n.ipynb")}),
                json!([]),
            ),
            ("Write", write("/etc/passwd"), json!([])),
            ("Write", write(p.cwd.join("../outside/x")), json!([])),
            ("Write", write(p.cwd.join("out/x")), json!([])),
            ("Write", write(p.outside.join("x")), json!([])),
        ];
        for (tool, input, suggestions) in cases {
            assert!(
                Offer::for_request(tool, &input, &suggestions, &p.cwd).is_none(),
                "{tool} {input}"
            );
        }
    }

    #[test]
    fn an_edit_offer_is_the_exact_real_file_for_this_session() {
        let p = project();
        let file = p.cwd.join("src/a.rs");
        // Spelled with `..`, the rule still names the real file.
        let spelled = p.cwd.join("src/../src/a.rs");
        let offer = Offer::for_request(
            "Write",
            &write(&spelled),
            &json!([{"type": "setMode", "mode": "acceptEdits", "destination": "session"}]),
            &p.cwd,
        )
        .unwrap();
        let wire = offer.to_wire();
        assert_eq!(wire.rule, format!("Write({})", file.display()));
        assert_eq!(wire.scope, RuleScope::Session);
        assert_eq!(
            wire.allows,
            format!("Write on the file {}, in this session only", file.display())
        );
        let (r, scope) = offer.choose(None, None).unwrap();
        assert_eq!(scope, RuleScope::Session);
        assert!(r.allows("Write", &write(&file), &p.cwd));
        assert!(
            r.allows("Write", &write("src/a.rs"), &p.cwd),
            "relative to cwd"
        );
        for other in [
            p.cwd.join("src/b.rs"),
            p.cwd.join("src/a.rs.bak"),
            p.cwd.join(".git/hooks/pre-commit"),
            p.outside.join("a.rs"),
            PathBuf::from("/home/user/.bashrc"),
        ] {
            assert!(
                !r.allows("Write", &write(&other), &p.cwd),
                "{}",
                other.display()
            );
        }
        assert!(!r.allows("Edit", &write(&file), &p.cwd), "another tool");
        // The same rule seen from another directory allows nothing there.
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(!r.allows("Write", &write(&file), elsewhere.path()));
        // NotebookEdit names its file differently.
        let nb = json!({"notebook_path": p.cwd.join("n.ipynb"), "new_source": ""});
        let offer = Offer::for_request("NotebookEdit", &nb, &json!([]), &p.cwd).unwrap();
        assert!(offer
            .choose(None, None)
            .unwrap()
            .0
            .allows("NotebookEdit", &nb, &p.cwd));
    }

    #[test]
    fn a_symlink_swapped_in_later_does_not_carry_a_rule_outside() {
        let p = project();
        let offer =
            Offer::for_request("Write", &write(p.cwd.join("gen/x")), &json!([]), &p.cwd).unwrap();
        let (file_rule, _) = offer.choose(None, None).unwrap();
        let (dir_rule, _) = offer
            .choose(None, Some(p.cwd.join("gen").to_str().unwrap()))
            .unwrap();
        // `gen` now appears as a symlink out of the project.
        std::os::unix::fs::symlink(&p.outside, p.cwd.join("gen")).unwrap();
        let request = write(p.cwd.join("gen/x"));
        assert!(!file_rule.allows("Write", &request, &p.cwd));
        assert!(!dir_rule.allows("Write", &request, &p.cwd));
        assert!(!dir_rule.allows("Write", &write(p.cwd.join("gen/y")), &p.cwd));
    }

    #[test]
    fn a_directory_is_only_taken_when_it_is_inside_and_holds_the_file() {
        let p = project();
        let file = p.cwd.join("src/a.rs");
        let offer = Offer::for_request("Edit", &write(&file), &json!([]), &p.cwd).unwrap();
        let src = p.cwd.join("src");
        let (r, scope) = offer
            .choose(Some(RuleScope::Project), Some(src.to_str().unwrap()))
            .unwrap();
        assert_eq!(scope, RuleScope::Project);
        assert_eq!(r.to_string(), format!("Edit({}/)", src.display()));
        assert!(r.allows("Edit", &write(src.join("new/b.rs")), &p.cwd));
        assert!(!r.allows("Edit", &write(p.cwd.join("c.rs")), &p.cwd));
        assert!(!r.allows("Edit", &write(src.join(".git/config")), &p.cwd));
        assert!(r.explain(scope, &p.cwd).starts_with(&format!(
            "Edit on any file under {}/ (except inside .git, .claude, .mcp.json, .vscode, .idea, .husky, .envrc, .ssh, .config, .local, .bashrc, .bash_profile, .profile, .zshrc, .zprofile, .gitconfig), in every session in",
            src.display()
        )));
        // The whole project, explicitly: still not its .git.
        let (whole, _) = offer.choose(None, Some(p.cwd.to_str().unwrap())).unwrap();
        assert!(whole.allows("Edit", &write(p.cwd.join("README.md")), &p.cwd));
        assert!(!whole.allows("Edit", &write(p.cwd.join(".git/hooks/pre-commit")), &p.cwd));
        assert!(!whole.allows("Edit", &write(p.cwd.join("out/x")), &p.cwd));

        let outside = p.outside.display().to_string();
        let parent = p.cwd.parent().unwrap().display().to_string();
        let dotdot = format!("{}/src/../..", p.cwd.display());
        let link = p.cwd.join("out").display().to_string();
        let other = p.cwd.join("other").display().to_string();
        let file_itself = file.display().to_string();
        for (dir, says) in [
            (outside.as_str(), "inside this session's directory"),
            (parent.as_str(), "inside this session's directory"),
            (dotdot.as_str(), "inside this session's directory"),
            (link.as_str(), "inside this session's directory"),
            ("/", "inside this session's directory"),
            ("src", "absolute"),
            ("", "absolute"),
            (other.as_str(), "must contain"),
            (file_itself.as_str(), "must be a directory"),
        ] {
            let err = offer.choose(None, Some(dir)).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, RulesError::Directory { .. })
                    && text.starts_with("`directory` ")
                    && text.contains(says),
                "{dir:?}: {text}"
            );
        }
        // A file inside .git is approved on its own, never through a directory.
        let hook = p.cwd.join(".git/hooks/pre-commit");
        let offer = Offer::for_request("Write", &write(&hook), &json!([]), &p.cwd).unwrap();
        assert!(offer.choose(None, Some(p.cwd.to_str().unwrap())).is_err());
        assert!(offer
            .choose(None, None)
            .unwrap()
            .0
            .allows("Write", &write(&hook), &p.cwd));
        // Bash has no directory to choose.
        let bash = Offer::for_request(
            "Bash",
            &json!({"command": "touch made.txt"}),
            &bash_suggestions("touch made.txt"),
            &p.cwd,
        )
        .unwrap();
        let err = bash
            .choose(None, Some(p.cwd.to_str().unwrap()))
            .unwrap_err();
        assert!(err.to_string().contains("only to file edits"), "{err}");
        // The scope alone can be changed either way.
        assert_eq!(
            bash.choose(Some(RuleScope::Session), None).unwrap().1,
            RuleScope::Session
        );
    }

    #[test]
    fn other_tools_get_what_the_cli_suggested_when_it_matches() {
        let p = project();
        let mcp = json!([{"type": "addRules", "behavior": "allow", "rules": [{"toolName": "mcp__db__query"}]}]);
        let offer = Offer::for_request("mcp__db__query", &json!({"sql": "select 1"}), &mcp, &p.cwd)
            .unwrap();
        assert!(offer
            .to_wire()
            .allows
            .starts_with("every use of mcp__db__query, in every session in"));
    }
}
