//! The rules as a person manages them (`chroxy rules list|remove`): every rule in one
//! list, by project directory then by session, each flagged if it can allow nothing.

use std::fmt::Write;
use std::path::Path;

use super::{Rule, RuleStore, RulesError};
use crate::store::Paths;

/// The rules kept with one session (in its record), as the list shows them. The
/// session module reads them ([`crate::session::rules_listing`]): rules know no session.
#[derive(Debug, Clone, Copy)]
pub struct SessionRules<'a> {
    /// Its working directory.
    pub cwd: &'a Path,
    /// Its id.
    pub session_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its rules.
    pub rules: &'a [Rule],
}

/// What `chroxy rules list` prints: the project rules (every session in the directory),
/// then those kept to one session (saved with it).
pub fn list_text(paths: &Paths, sessions: &[SessionRules<'_>]) -> Result<String, RulesError> {
    let file = RuleStore::new(paths).load()?;
    let sessions: Vec<_> = sessions.iter().filter(|s| !s.rules.is_empty()).collect();
    let mut out = String::new();
    if file.projects.is_empty() && sessions.is_empty() {
        out.push_str("no rules (phones add them with \"Always\" on a permission prompt)\n");
    }
    // Writing to a String cannot fail.
    let mut show = |heading: String, rules: &[Rule]| {
        let _ = writeln!(out, "{heading}");
        for rule in rules {
            let _ = match rule.inert() {
                Some(why) => writeln!(out, "  {rule}    [allows nothing: {why}; remove it]"),
                None => writeln!(out, "  {rule}"),
            };
        }
    };
    for (project, rules) in &file.projects {
        show(
            format!("{} (every session in it)", project.display()),
            rules,
        );
    }
    for rec in &sessions {
        let heading = format!(
            "{} (session {} \"{}\" only; gone when it is closed)",
            rec.cwd.display(),
            rec.session_id,
            rec.name
        );
        show(heading, rec.rules);
    }
    Ok(out)
}

/// `chroxy rules remove`: deletes the project rule written as `rule` (as the list shows
/// it), in `project` or in every project; returns how many went. Finding none is an
/// error, so a typo is not mistaken for a removal.
pub fn remove(paths: &Paths, rule: &str, project: Option<&Path>) -> Result<usize, RulesError> {
    let project = project
        .map(|p| {
            p.canonicalize().map_err(|source| RulesError::NoProject {
                path: p.to_path_buf(),
                source,
            })
        })
        .transpose()?;
    match RuleStore::new(paths).remove(project.as_deref(), rule)? {
        0 => Err(RulesError::NotFound(rule.to_owned())),
        removed => Ok(removed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_rule_is_listed_under_its_directory_and_removed_by_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path().join("home"));
        let project = dir.path().canonicalize().unwrap();
        assert!(list_text(&paths, &[]).unwrap().starts_with("no rules"));

        let rule = Rule {
            tool: "Bash".into(),
            content: Some("touch made.txt".into()),
            created_at: 0,
        };
        let text = rule.to_string();
        RuleStore::new(&paths).add(&project, rule).unwrap();
        let listed = list_text(&paths, &[]).unwrap();
        assert_eq!(
            listed,
            format!("{} (every session in it)\n  {text}\n", project.display())
        );

        let typo = remove(&paths, "Bash(touch maid.txt)", None).unwrap_err();
        assert!(matches!(&typo, RulesError::NotFound(_)), "{typo}");
        assert!(typo.to_string().contains("`chroxy rules list` shows them"));
        let elsewhere = remove(&paths, &text, Some(&dir.path().join("nowhere"))).unwrap_err();
        assert!(
            elsewhere.to_string().ends_with("nowhere does not exist"),
            "{elsewhere}"
        );

        assert_eq!(remove(&paths, &text, Some(dir.path())).unwrap(), 1);
        assert!(list_text(&paths, &[]).unwrap().starts_with("no rules"));
    }
}
