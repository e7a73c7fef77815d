//! The half of a session that waits on people: permission prompts and questions
//! from the agent, answers from phones (first one wins), "allow always" rules,
//! timeouts, and what happens to waiting prompts when a turn, an agent or the session
//! ends. Every prompt enters through `on_control_request` and leaves through
//! `resolve` (answered) or `end_prompt` / `forget_prompts` (not answered).

use serde_json::{json, Value};
use tokio::time::Instant;

use super::super::prompts::{Ask, Prompt};
use super::Session;
use crate::protocol::{Decision, ErrorCode, MessageType, PermissionResponse, RuleScope, ServerMsg};
use crate::push::{Notice, NoticeKind};
use crate::rules::{Offer, Rule, RulesError};
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
        // Kept while it waits, for a worker that may have to ask it again.
        self.asked.insert(request_id.clone(), request.clone());
        let tool = field("tool_name").unwrap_or_default();
        let input = request.get("input").cloned().unwrap_or_else(|| json!({}));
        let sid = self.rec.session_id.clone();
        if tool == "AskUserQuestion" {
            let id = field("tool_use_id").unwrap_or_else(|| request_id.clone());
            let prompt = self
                .prompts
                .add(id, request_id, Ask::Question { input }, Instant::now());
            let (msg, id) = (prompt.to_msg(&sid, Instant::now()), prompt.id.clone());
            self.noted_before_told().await;
            self.publish(Audience::All, &msg);
            self.push_waiting(NoticeKind::Question, id, None);
            return;
        }
        // A rule remembered with "Always" (this session's, then the project's) answers
        // without asking anyone. Otherwise work out what "Always" would remember, so the
        // phones are told exactly that. Both look at the file system (real paths).
        let suggestions = request
            .get("permission_suggestions")
            .cloned()
            .unwrap_or(Value::Null);
        let (store, cwd, mine, t, i) = (
            self.cfg.rules.clone(),
            self.rec.cwd.clone(),
            self.rec.rules.clone(),
            tool.clone(),
            input.clone(),
        );
        let lookup = move || {
            let matched = match mine.into_iter().find(|r| r.allows(&t, &i, &cwd)) {
                Some(rule) => Ok(Some((rule, RuleScope::Session))),
                None => store
                    .matching(&cwd, &t, &i)
                    .map(|r| r.map(|r| (r, RuleScope::Project))),
            };
            let offer = match matched {
                Ok(Some(_)) => None,
                _ => Offer::for_request(&t, &i, &suggestions, &cwd),
            };
            (matched, offer)
        };
        let (matched, offer) = tokio::task::spawn_blocking(lookup)
            .await
            .unwrap_or_else(|join| {
                tracing::error!(%join, "rule lookup panicked");
                (Ok(None), None)
            });
        match matched {
            Ok(Some((rule, scope))) => {
                let _ = agent.respond(&request_id, allow(&input)).await;
                tracing::info!(%rule, ?scope, "allowed by a saved rule");
                let whose = match scope {
                    RuleScope::Session => " for this session",
                    RuleScope::Project => "",
                };
                self.notice(
                    MessageType::System,
                    format!("Allowed by your rule {rule}{whose}."),
                );
                return;
            }
            Ok(None) => {}
            Err(err) => {
                tracing::error!(%err, "permission rules unreadable; asking instead");
                self.session_error(
                    None,
                    format!("Saved permission rules could not be read ({err}); asking instead."),
                );
            }
        }
        let description = field("description")
            .or_else(|| field("display_name"))
            .unwrap_or_else(|| tool.clone());
        let ask = Ask::Permission {
            tool: tool.clone(),
            description,
            input,
            offer,
        };
        let prompt = self
            .prompts
            .add(request_id.clone(), request_id, ask, Instant::now());
        let (msg, id) = (prompt.to_msg(&sid, Instant::now()), prompt.id.clone());
        self.noted_before_told().await;
        self.publish(Audience::All, &msg);
        self.push_waiting(NoticeKind::Permission, id, Some(tool));
    }

    /// A prompt the CLI waits on is in the supervisor's note before any phone hears of
    /// it. The CLI asks once: a worker killed between telling the phones and the note
    /// would leave a successor that never asks again, and a phone whose prompt vanished
    /// with the CLI still waiting on it, until it times out. The note is a packet away.
    async fn noted_before_told(&mut self) {
        if let Some(sent) = self.sync_note() {
            let _ = sent.await;
        }
    }

    /// A prompt waits: phones that are not looking are woken if it still waits after
    /// the grace period (its name and tool only: what it asks stays on the computer).
    fn push_waiting(&self, kind: NoticeKind, id: String, tool: Option<String>) {
        let mut notice = Notice::about(kind, &self.rec.session_id, &self.rec.name);
        notice.tool = tool;
        notice.prompt_id = Some(id.clone());
        let (index, clients) = (self.prompts.index(), self.clients.clone());
        self.cfg.push.alerts.prompt_waiting(
            notice,
            move || index.session_of(&id).is_some(),
            move || clients.anyone_looking(),
        );
    }

    /// A phone's answer. The prompt is taken out of the map before anything is sent, so
    /// of two answers racing for it exactly one reaches the agent.
    pub(super) async fn answer(&mut self, answer: PermissionResponse, from: &str, device: &str) {
        let PermissionResponse {
            request_id: id,
            decision,
            reason,
            scope,
            directory,
        } = answer;
        // What "Always" stores is checked while the prompt still waits: a refused choice
        // leaves it waiting (nothing stored, nothing answered), and another phone's
        // answer meanwhile queues behind this one instead of finding it gone.
        let chosen = match decision {
            Decision::AllowAlways => match self.choose_rule(&id, scope, directory).await {
                Ok(chosen) => chosen,
                Err(err) => {
                    self.clients.send_msg(
                        from,
                        &ServerMsg::Error {
                            code: ErrorCode::InvalidMessage,
                            message: err.to_string(),
                            request_id: Some(id),
                        },
                    );
                    return;
                }
            },
            Decision::Allow | Decision::Deny => None,
        };
        let Some(prompt) = self.prompts.take(&id) else {
            self.too_late(&id, from);
            return;
        };
        let Ask::Permission { tool, input, .. } = &prompt.ask else {
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
        // Claude Code is never handed the rule (`updatedPermissions`): its own matching
        // is not what the phone was shown, so every later request still comes here.
        let (response, word) = match decision {
            Decision::Allow => (allow(input), "allow"),
            Decision::Deny => (deny(device, reason.as_deref()), "deny"),
            Decision::AllowAlways => {
                self.remember_rule(tool, chosen).await;
                (allow(input), "allowAlways")
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

    /// The rule an "Always" answer to prompt `id` stores and how far it reaches: its
    /// offer, or the `scope` and `directory` the phone named instead once checked.
    /// `None` when the prompt offered nothing (or is not a waiting permission prompt).
    async fn choose_rule(
        &self,
        id: &str,
        scope: Option<RuleScope>,
        directory: Option<String>,
    ) -> Result<Option<(Rule, RuleScope)>, RulesError> {
        let offer = match self.prompts.get(id).map(|p| &p.ask) {
            Some(Ask::Permission {
                offer: Some(offer), ..
            }) => offer.clone(),
            Some(Ask::Permission { offer: None, .. }) if directory.is_some() => {
                return Err(RulesError::not_an_edit());
            }
            _ => return Ok(None),
        };
        let chosen = tokio::task::spawn_blocking(move || offer.choose(scope, directory.as_deref()));
        match chosen.await {
            Ok(chosen) => chosen.map(Some),
            Err(join) => {
                tracing::error!(%join, "choosing a rule panicked");
                Ok(None)
            }
        }
    }

    /// Stores a rule chosen for "Always". A rule that cannot be saved still lets this
    /// request through, and the phones are told.
    async fn remember_rule(&mut self, tool: &str, chosen: Option<(Rule, RuleScope)>) {
        let Some((rule, scope)) = chosen else {
            self.notice(
                MessageType::System,
                format!("Allowed once: no rule could say exactly what was approved for {tool}, so nothing was remembered."),
            );
            return;
        };
        match scope {
            RuleScope::Session => {
                if !self.rec.rules.iter().any(|r| r.same_as(&rule)) {
                    self.rec.rules.push(rule.clone());
                }
                // On disk before the agent hears "allow": a worker killed right after
                // must still know it.
                self.persist().await;
            }
            RuleScope::Project => {
                let (store, cwd, r) = (self.cfg.rules.clone(), self.rec.cwd.clone(), rule.clone());
                let saved = tokio::task::spawn_blocking(move || store.add(&cwd, r)).await;
                let failure = match saved {
                    Ok(Ok(_)) => None,
                    Ok(Err(err)) => Some(err.to_string()),
                    Err(join) => Some(join.to_string()),
                };
                if let Some(err) = failure {
                    tracing::error!(%err, "saving a rule failed");
                    self.session_error(
                        None,
                        format!("Allowed once, but the rule could not be saved: {err}"),
                    );
                    return;
                }
            }
        }
        let allows = rule.explain(scope, &self.rec.cwd);
        tracing::info!(%rule, ?scope, "rule remembered");
        self.notice(
            MessageType::System,
            format!("Remembered {rule}: from now on it allows {allows}."),
        );
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
fn allow(input: &Value) -> Value {
    json!({"behavior": "allow", "updatedInput": input})
}

fn deny(device: &str, reason: Option<&str>) -> Value {
    let message = match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => format!("Denied from {device}: {r}"),
        None => format!("Denied from {device}"),
    };
    json!({"behavior": "deny", "message": message})
}
