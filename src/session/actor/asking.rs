//! The half of a session that waits on people: permission prompts and questions
//! from the agent, answers from phones (first one wins), "allow always" rules,
//! timeouts, and what happens to waiting prompts when a turn, an agent or the session
//! ends. Every prompt enters through `on_control_request` and leaves through
//! `resolve` (answered) or `end_prompt` / `forget_prompts` (not answered).

use serde_json::{json, Value};
use tokio::time::Instant;

use super::super::prompts::{Ask, Prompt};
use super::Session;
use crate::protocol::{Decision, ErrorCode, MessageType, ServerMsg};
use crate::rules::Rule;
use crate::session::clients::Audience;

impl Session {
    pub(super) async fn on_control_request(
        &mut self,
        request_id: String,
        subtype: &str,
        request: Value,
    ) {
        let Some(agent) = self.agent.as_ref() else {
            return;
        };
        if subtype != "can_use_tool" {
            tracing::debug!(
                subtype,
                "unsupported control request from the agent; answering empty"
            );
            let _ = agent.respond(&request_id, json!({})).await;
            return;
        }
        let field = |k: &str| request.get(k).and_then(Value::as_str).map(str::to_owned);
        let tool = field("tool_name").unwrap_or_default();
        let input = request.get("input").cloned().unwrap_or_else(|| json!({}));
        let sid = self.rec.session_id.clone();
        if tool == "AskUserQuestion" {
            let id = field("tool_use_id").unwrap_or_else(|| request_id.clone());
            let msg = self
                .prompts
                .add(id, request_id, Ask::Question { input }, Instant::now())
                .to_msg(&sid, Instant::now());
            self.publish(Audience::All, &msg);
            return;
        }
        // A rule remembered with "allow always" answers without asking anyone.
        let (rules, cwd, t, i) = (
            self.cfg.rules.clone(),
            self.rec.cwd.clone(),
            tool.clone(),
            input.clone(),
        );
        match tokio::task::spawn_blocking(move || rules.matching(&cwd, &t, &i)).await {
            Ok(Ok(Some(rule))) => {
                let _ = agent.respond(&request_id, allow(&input, None)).await;
                tracing::info!(%rule, "allowed by a saved rule");
                self.notice(MessageType::System, format!("Allowed by your rule {rule}."));
                return;
            }
            Ok(Ok(None)) => {}
            Ok(Err(err)) => {
                tracing::error!(%err, "permission rules unreadable; asking instead");
                self.session_error(
                    None,
                    format!("Saved permission rules could not be read ({err}); asking instead."),
                );
            }
            Err(join) => tracing::error!(%join, "rule lookup panicked"),
        }
        let description = field("description")
            .or_else(|| field("display_name"))
            .unwrap_or_else(|| tool.clone());
        let suggestions = request
            .get("permission_suggestions")
            .cloned()
            .unwrap_or(Value::Null);
        let ask = Ask::Permission {
            tool,
            description,
            input,
            suggestions,
        };
        let msg = self
            .prompts
            .add(request_id.clone(), request_id, ask, Instant::now())
            .to_msg(&sid, Instant::now());
        self.publish(Audience::All, &msg);
    }

    /// A phone's answer. The prompt is taken out of the map before anything is sent, so
    /// of two answers racing for it exactly one reaches the agent.
    pub(super) async fn answer(
        &mut self,
        id: String,
        decision: Decision,
        reason: Option<String>,
        from: &str,
        device: &str,
    ) {
        let Some(prompt) = self.prompts.take(&id) else {
            self.too_late(&id, from);
            return;
        };
        let Ask::Permission {
            tool,
            input,
            suggestions,
            ..
        } = &prompt.ask
        else {
            // A question answered as a permission: "deny" dismisses it, anything else
            // needs the chosen option.
            if decision == Decision::Deny {
                self.resolve(&prompt, deny(device, reason.as_deref()), "deny")
                    .await;
            } else {
                self.prompts.put_back(prompt);
                self.clients.send_msg(
                    from,
                    &ServerMsg::error(
                        ErrorCode::InvalidMessage,
                        format!("`{id}` is a question; answer it with user_question_response"),
                    ),
                );
            }
            return;
        };
        let (response, word) = match decision {
            Decision::Allow => (allow(input, None), "allow"),
            Decision::Deny => (deny(device, reason.as_deref()), "deny"),
            Decision::AllowAlways => {
                self.remember_rule(tool, suggestions).await;
                (
                    allow(input, Some(session_scoped(suggestions))),
                    "allowAlways",
                )
            }
        };
        self.resolve(&prompt, response, word).await;
    }

    pub(super) async fn answer_question(
        &mut self,
        id: String,
        answer: String,
        answers: Option<std::collections::BTreeMap<String, String>>,
        from: &str,
    ) {
        let Some(prompt) = self.prompts.take(&id) else {
            self.too_late(&id, from);
            return;
        };
        let Ask::Question { input } = &prompt.ask else {
            self.prompts.put_back(prompt);
            self.clients.send_msg(
                from,
                &ServerMsg::error(
                    ErrorCode::InvalidMessage,
                    format!("`{id}` is a permission request; answer it with permission_response"),
                ),
            );
            return;
        };
        // The CLI wants question text → chosen label(s); a single `answer` goes to the
        // first question.
        let answers = answers.filter(|a| !a.is_empty()).unwrap_or_else(|| {
            let first = input
                .pointer("/questions/0/question")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            std::iter::once((first, answer)).collect()
        });
        let mut updated = input.clone();
        if let Some(obj) = updated.as_object_mut() {
            obj.insert("answers".into(), json!(answers));
        }
        self.resolve(
            &prompt,
            json!({"behavior": "allow", "updatedInput": updated}),
            "allow",
        )
        .await;
    }

    fn too_late(&self, id: &str, from: &str) {
        self.clients.send_msg(
            from,
            &ServerMsg::PermissionExpired {
                request_id: id.to_owned(),
                message: "this prompt was already answered, timed out, or was withdrawn".into(),
                session_id: self.rec.session_id.clone(),
            },
        );
    }

    /// Sends the decision to the agent and tells every phone to hide the prompt.
    async fn resolve(&mut self, prompt: &Prompt, response: Value, decision: &str) {
        if let Some(agent) = &self.agent {
            let _ = agent.respond(&prompt.cli_request, response).await;
        }
        tracing::info!(prompt = %prompt.id, decision, "prompt answered");
        self.publish(
            Audience::All,
            &ServerMsg::PermissionResolved {
                request_id: prompt.id.clone(),
                decision: decision.to_owned(),
                session_id: self.rec.session_id.clone(),
            },
        );
    }

    async fn remember_rule(&mut self, tool: &str, suggestions: &Value) {
        let Some(rule) = Rule::from_request(tool, suggestions) else {
            self.notice(
                MessageType::System,
                format!("Allowed once: Claude Code offered no rule to remember for {tool}."),
            );
            return;
        };
        let (rules, cwd, r) = (self.cfg.rules.clone(), self.rec.cwd.clone(), rule.clone());
        match tokio::task::spawn_blocking(move || rules.add(&cwd, r)).await {
            Ok(Ok(_)) => self.notice(
                MessageType::System,
                format!(
                    "Remembered: {rule} is always allowed in {}.",
                    self.rec.cwd.display()
                ),
            ),
            Ok(Err(err)) => self.session_error(
                None,
                format!("Allowed, but the rule could not be saved: {err}"),
            ),
            Err(join) => tracing::error!(%join, "saving a rule panicked"),
        }
    }

    pub(super) async fn expire_prompts(&mut self) {
        for prompt in self.prompts.take_expired(Instant::now()) {
            let secs = self.cfg.permission_timeout.as_secs_f64();
            self.end_prompt(prompt, &format!("No answer within {secs:.0} s; denied."))
                .await;
        }
    }

    /// Denies everything still waiting (session closing, server stopping).
    /// Drops every waiting prompt without answering the agent (it is gone, or no longer
    /// waiting) and tells the phones why.
    pub(super) fn forget_prompts(&mut self, why: &str) {
        for prompt in self.prompts.take_all() {
            self.announce_expired(prompt.id, why);
        }
    }

    pub(super) fn announce_expired(&self, id: String, message: &str) {
        self.publish(
            Audience::All,
            &ServerMsg::PermissionExpired {
                request_id: id,
                message: message.to_owned(),
                session_id: self.rec.session_id.clone(),
            },
        );
    }

    pub(super) async fn deny_all_prompts(&mut self, why: &str) {
        for prompt in self.prompts.take_all() {
            self.end_prompt(prompt, &format!("Denied: {why}.")).await;
        }
    }

    async fn end_prompt(&mut self, prompt: Prompt, message: &str) {
        if let Some(agent) = &self.agent {
            let answer = json!({"behavior": "deny", "message": message});
            let _ = agent.respond(&prompt.cli_request, answer).await;
        }
        self.announce_expired(prompt.id, message);
    }
}

/// `allow` must always carry `updatedInput` (the original input when nothing changed).
fn allow(input: &Value, permissions: Option<Value>) -> Value {
    let mut v = json!({"behavior": "allow", "updatedInput": input});
    if let Some(p) = permissions.filter(|p| p.as_array().is_some_and(|a| !a.is_empty())) {
        v["updatedPermissions"] = p;
    }
    v
}

fn deny(device: &str, reason: Option<&str>) -> Value {
    let message = match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => format!("Denied from {device}: {r}"),
        None => format!("Denied from {device}"),
    };
    json!({"behavior": "deny", "message": message})
}

/// The CLI's suggestions, kept to this session: its rules and directories apply until
/// the agent exits, and nothing is written to the user's Claude Code settings files
/// (our own rule file is what persists "always").
fn session_scoped(suggestions: &Value) -> Value {
    let kept: Vec<Value> = suggestions
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            matches!(
                s.get("type").and_then(Value::as_str),
                Some("addRules" | "addDirectories")
            )
        })
        .map(|s| {
            let mut s = s.clone();
            s["destination"] = json!("session");
            s
        })
        .collect();
    Value::Array(kept)
}
