//! Claude Code's subagents, as `list_agents` shows them: Markdown files in the
//! project's `.claude/agents/` and the user's `<claude config>/agents/`, each with a
//! front matter that names it (`name:`) and says when to use it (`description:`).
//! Only that header is read; the agent's prompt never leaves the machine.

use std::io::Read as _;
use std::path::Path;

use crate::protocol::AgentInfo;

/// Files looked at per directory: a directory of thousands is not a list a phone shows.
const MAX_FILES: usize = 200;
/// Bytes of each file read: the front matter comes first.
const HEADER_BYTES: u64 = 8 * 1024;
/// Characters of a description shown.
const MAX_DESCRIPTION: usize = 200;

/// The project's agents (under `cwd`), then the user's (under `config_dir`), each by
/// name; a project agent hides a user agent of the same name, as in Claude Code.
pub fn find(cwd: Option<&Path>, config_dir: Option<&Path>) -> Vec<AgentInfo> {
    let mut agents: Vec<AgentInfo> = Vec::new();
    let places = [
        (cwd.map(|c| c.join(".claude").join("agents")), "project"),
        (config_dir.map(|c| c.join("agents")), "user"),
    ];
    for (dir, source) in places {
        let Some(dir) = dir else { continue };
        let mut found: Vec<AgentInfo> = in_dir(&dir, source)
            .into_iter()
            .filter(|a| !agents.iter().any(|b| b.name == a.name))
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        agents.extend(found);
    }
    agents
}

fn in_dir(dir: &Path, source: &str) -> Vec<AgentInfo> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new(); // no such directory: no agents of this kind
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "md"))
        .take(MAX_FILES)
        // Followed through links (agents kept in a dotfiles repository), but only files:
        // a FIFO would block the read.
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()))
        .filter_map(|e| {
            let mut header = Vec::new();
            let file = std::fs::File::open(e.path()).ok()?;
            file.take(HEADER_BYTES).read_to_end(&mut header).ok()?;
            // The cut may fall inside a character; what comes before it is whole. A
            // header that is not UTF-8 is no agent definition.
            let text = match std::str::from_utf8(&header) {
                Ok(text) => text,
                Err(e) if e.error_len().is_none() => {
                    std::str::from_utf8(&header[..e.valid_up_to()]).ok()?
                }
                Err(_) => return None,
            };
            let (name, description) = front_matter(text)?;
            Some(AgentInfo {
                name,
                description,
                source: source.to_owned(),
            })
        })
        .collect()
}

/// `name` and `description` from a `---`-fenced header of `key: value` lines.
fn front_matter(text: &str) -> Option<(String, String)> {
    let mut lines = text.lines();
    if lines.next()?.trim_end() != "---" {
        return None;
    }
    let (mut name, mut description) = (None, String::new());
    for line in lines {
        if line.trim_end() == "---" {
            let name: String = name?;
            return Some((name, description));
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        match key.trim() {
            "name" if !value.is_empty() => name = Some(value.chars().take(64).collect()),
            "description" => description = value.chars().take(MAX_DESCRIPTION).collect(),
            _ => {}
        }
    }
    None // never closed: not a front matter
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn project_agents_come_first_and_hide_user_agents_of_the_same_name() {
        let tmp = tempfile::tempdir().unwrap();
        let (project, config) = (tmp.path().join("p"), tmp.path().join("c"));
        let ours = project.join(".claude/agents");
        write(
            &ours,
            "review.md",
            b"---\nname: reviewer\ndescription: \"Reviews diffs\"\ntools: Read\n---\nYou review.\n",
        );
        write(&ours, "notes.txt", b"---\nname: not-an-agent\n---\n");
        let users = config.join("agents");
        write(
            &users,
            "a.md",
            b"---\nname: reviewer\ndescription: the user's\n---\n",
        );
        write(
            &users,
            "b.md",
            b"---\nname: writer\ndescription: Writes docs\n---\nbody\n",
        );
        let found = find(Some(&project), Some(&config));
        let got: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|a| (a.name.as_str(), a.description.as_str(), a.source.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("reviewer", "Reviews diffs", "project"),
                ("writer", "Writes docs", "user")
            ]
        );
    }

    #[test]
    fn files_without_a_closed_named_header_or_not_utf8_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".claude/agents");
        write(&dir, "open.md", b"---\nname: open\n");
        write(&dir, "nameless.md", b"---\ndescription: no name\n---\n");
        write(&dir, "plain.md", b"# Just notes\nname: x\n");
        write(&dir, "binary.md", b"---\nname: \xff\xfe\n---\n");
        let long = format!("---\nname: long\ndescription: {}\n---\n", "d".repeat(5000));
        write(&dir, "long.md", long.as_bytes());
        // A long body whose 8 KiB cut falls inside a character: the header still reads.
        let cut = format!("---\nname: cut\n---\n{}", "é".repeat(HEADER_BYTES as usize));
        write(&dir, "cut.md", cut.as_bytes());
        let found = find(Some(tmp.path()), None);
        let names: Vec<&str> = found.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["cut", "long"], "{found:?}");
        assert_eq!(found[1].description.chars().count(), MAX_DESCRIPTION);
        // Nowhere to look: nothing, not an error.
        assert!(find(Some(&tmp.path().join("missing")), None).is_empty());
    }
}
