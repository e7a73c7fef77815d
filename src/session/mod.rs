//! Sessions and the clients watching them.
//!
//! The [`Hub`] is what a connection talks to after `auth`: it keeps the sessions (each a
//! task, see `actor.rs`), the connected clients and which session each one is looking
//! at, and turns client requests into session commands. It enforces the session limits,
//! restores saved sessions at start, and makes sure there is always a session to type
//! into.

mod actor;
mod attachments;
mod clients;
mod deploy;
mod prompts;
mod push;
mod record;
mod saver;
pub mod spend;

pub use actor::Refusal;
pub use clients::{
    frame, queue, Audience, ClientId, Clients, Frame, Outbound, QueueFull, QueueRx, QueueTx,
    SessionId,
};
pub use deploy::{DeployAsk, DeployLink};
pub use prompts::PromptIndex;
pub use record::{read_all, RecordError, SessionRecord};

/// What `chroxy rules list` prints: the project rules, then those kept with each saved
/// session (read here, since the rules module knows no session).
pub fn rules_listing(paths: &crate::store::Paths) -> Result<String, crate::rules::RulesError> {
    let records: Vec<SessionRecord> = read_all(&paths.sessions_dir())
        .into_iter()
        .filter_map(|(_, rec)| rec.ok())
        .collect();
    let sessions: Vec<crate::rules::SessionRules<'_>> = records
        .iter()
        .map(|rec| crate::rules::SessionRules {
            cwd: &rec.cwd,
            session_id: &rec.session_id,
            name: &rec.name,
            rules: &rec.rules,
        })
        .collect();
    crate::rules::list_text(paths, &sessions)
}

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::protocol::{
    now_ms, ClientMsg, ErrorCode, Input, ModelInfo, PermissionMode, PermissionModeInfo, ServerMsg,
    SessionInfo, MAX_SESSIONS,
};
use actor::{Cmd, InfoCell, Session};

/// What sessions need to know, fixed for the worker's lifetime.
#[derive(Debug, Clone)]
pub struct SessionsConfig {
    /// Where session files live.
    pub sessions_dir: PathBuf,
    /// Explicit `claude` path (`CHROXY_CLAUDE` / config); `None` searches `PATH`.
    pub claude: Option<PathBuf>,
    /// Directory of the default session.
    pub default_cwd: PathBuf,
    /// Text delta coalescing window; zero sends each delta at once.
    pub coalesce: Duration,
    /// Models phones may choose.
    pub models: Vec<ModelInfo>,
    /// How the agent's environment differs from the worker's.
    pub agent_env: crate::agent::AgentEnv,
    /// Unanswered prompts are denied after this long.
    pub permission_timeout: Duration,
    /// An agent still busy this long after `interrupt` is stopped, so no session stays
    /// busy forever.
    pub interrupt_grace: Duration,
    /// CLIs started ahead of input, for the sessions most recently opened.
    pub warm_clis: usize,
    /// An idle CLI is stopped after this long (`None`: never).
    pub cli_idle: Option<Duration>,
    /// "Allow always" rules.
    pub rules: crate::rules::RuleStore,
    /// What the turns have cost today, over every session.
    pub spend: spend::Spend,
    /// Whether agents may be switched to `auto` (see [`crate::agent::AgentSpec`]).
    pub allow_bypass: bool,
    /// Claude Code's user settings directory (`CLAUDE_CONFIG_DIR`, else `~/.claude`),
    /// where the user's subagents are.
    pub claude_config_dir: Option<PathBuf>,
    /// Told to every phone right after its welcome (as a `system` message of the
    /// active session, never stored): e.g. that answers come from the demo model.
    pub welcome_notice: Option<String>,
    /// Web Push: phones' subscriptions, and whether a prompt or turn is news.
    pub push: crate::push::WorkerPush,
    /// How phones' deploy requests reach the supervisor; `None` without one.
    pub deploy: Option<deploy::DeployLink>,
    /// The supervisor's keeper, which holds the CLIs' pipes too; `None` without one.
    pub keeper: Option<crate::keeper::Link>,
    /// A standby worker's: phones are welcomed (and so served) only after
    /// [`Hub::promoted`]. Its promotion re-reads the sessions and hands it the lost
    /// worker's CLIs first; a phone quicker than that must not start a second CLI on a
    /// conversation whose CLI is on its way.
    pub standby: bool,
}

struct Entry {
    id: SessionId,
    tx: mpsc::Sender<Cmd>,
    info: InfoCell,
    task: JoinHandle<()>,
    saver: JoinHandle<()>,
}

/// The sessions and clients of one worker; a cheap clone.
#[derive(Clone)]
pub struct Hub {
    cfg: Arc<SessionsConfig>,
    clients: Clients,
    sessions: Arc<Mutex<Vec<Entry>>>,
    /// Serializes create/destroy so the limit and the "always one session" rule hold.
    structure: Arc<tokio::sync::Mutex<()>>,
    draining: CancellationToken,
    prompts: PromptIndex,
    /// Woken whenever a session's summary changes (busy → idle among others).
    changed: Arc<tokio::sync::Notify>,
    /// The sessions phones opened most recently, newest last: the ones whose CLI is
    /// kept started (at most `warm_clis`).
    warm: Arc<Mutex<std::collections::VecDeque<SessionId>>>,
    /// Cancelled once the sessions may take input (at once, except on a standby).
    serving: CancellationToken,
}

impl Hub {
    /// Restores saved sessions (newest first, at most [`MAX_SESSIONS`]) or creates the
    /// default one.
    pub async fn start(cfg: SessionsConfig) -> Self {
        let hub = Self {
            cfg: Arc::new(cfg),
            clients: Clients::default(),
            sessions: Default::default(),
            structure: Default::default(),
            draining: CancellationToken::new(),
            prompts: PromptIndex::default(),
            changed: Default::default(),
            warm: Default::default(),
            serving: CancellationToken::new(),
        };
        if !hub.cfg.standby {
            hub.serving.cancel();
        }
        let dir = hub.cfg.sessions_dir.clone();
        let records = tokio::task::spawn_blocking(move || record::load_all(&dir))
            .await
            .unwrap_or_default();
        if records.len() > MAX_SESSIONS {
            tracing::warn!(
                found = records.len(),
                kept = MAX_SESSIONS,
                "more saved sessions than the limit; the oldest stay on disk unused"
            );
        }
        for rec in records.into_iter().take(MAX_SESSIONS) {
            tracing::info!(session = %rec.session_id, history = rec.history.len(), "restored session");
            hub.spawn_session(rec, false);
        }
        if hub.lock().is_empty() {
            hub.create_default();
        }
        hub
    }

    /// This standby now serves: its sessions take input (see [`SessionsConfig::standby`]).
    pub fn promoted(&self) {
        self.serving.cancel();
    }

    /// The CLI a lost worker ran for one of these sessions: the session carries on with
    /// it. One for a session that is gone here is let go (it exits on its own).
    pub async fn adopt(&self, kept: crate::keeper::Kept) {
        let session = kept.agent.session.clone();
        if let Some(tx) = self.sender(&session) {
            let kept = Box::new(kept);
            if let Err(mpsc::error::SendError(Cmd::Adopt { kept })) =
                tx.send(Cmd::Adopt { kept }).await
            {
                self.let_go(*kept);
            }
            return;
        }
        tracing::info!(%session, "no such session here; letting its CLI go");
        self.let_go(kept);
    }

    fn let_go(&self, kept: crate::keeper::Kept) {
        if let Some(link) = &self.cfg.keeper {
            link.release(&kept.agent.mark);
        }
        drop(kept);
    }

    /// Re-reads the saved sessions after the worker this one replaced has saved its
    /// last state (a deploy runs both for a moment): sessions untouched here take the
    /// saved version, sessions created there meanwhile appear here. With `closed_there`
    /// (this worker was a standby that served nobody), sessions no longer on disk were
    /// closed there, and go here too.
    pub async fn resync(&self, closed_there: bool) {
        let dir = self.cfg.sessions_dir.clone();
        let records = tokio::task::spawn_blocking(move || record::load_all(&dir))
            .await
            .unwrap_or_default();
        let mut changed = false;
        // A worker always keeps a session, so an empty listing says nothing was closed:
        // the directory could not be read.
        if closed_there && !records.is_empty() {
            let _guard = self.structure.lock().await;
            let gone: Vec<Entry> = {
                let mut sessions = self.lock();
                let (gone, kept) = std::mem::take(&mut *sessions)
                    .into_iter()
                    .partition(|e| !records.iter().any(|r| r.session_id == e.id));
                *sessions = kept;
                gone
            };
            for entry in gone {
                tracing::info!(session = %entry.id, "session closed by the previous worker");
                stop_entry(entry, Some(&self.cfg.sessions_dir)).await;
                changed = true;
            }
        }
        for rec in records {
            match self.sender(&rec.session_id) {
                Some(tx) => {
                    let _ = tx.send(Cmd::Resync { rec: Box::new(rec) }).await;
                }
                None if self.session_count() < MAX_SESSIONS => {
                    tracing::info!(session = %rec.session_id, "session created by the previous worker");
                    self.spawn_session(rec, false);
                    changed = true;
                }
                None => {}
            }
        }
        if changed {
            self.clients.publish(
                Audience::All,
                &ServerMsg::SessionList {
                    sessions: self.session_infos(),
                },
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connected clients.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Summaries of every session, in creation order.
    pub fn session_infos(&self) -> Vec<SessionInfo> {
        let mut infos: Vec<SessionInfo> = self
            .lock()
            .iter()
            .map(|e| e.info.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        infos.sort_by_key(|i| i.created_at);
        infos
    }

    /// The models phones may choose.
    pub fn models(&self) -> &[ModelInfo] {
        &self.cfg.models
    }

    /// Number of sessions.
    pub fn session_count(&self) -> usize {
        self.lock().len()
    }

    /// Prompts waiting for an answer, across all sessions.
    pub fn pending_prompts(&self) -> usize {
        self.prompts.len()
    }

    fn spawn_session(&self, rec: SessionRecord, save_now: bool) -> SessionId {
        let id = rec.session_id.clone();
        let (tx, rx) = mpsc::channel(64);
        let (save_tx, save_rx) = watch::channel(save_now.then(|| (0, rec.clone())));
        if save_now {
            save_tx.send_modify(|_| {}); // mark as changed so the saver writes it
        }
        let (written_tx, written_rx) = watch::channel(0);
        let saver = tokio::spawn(saver::run_saver(
            save_rx,
            written_tx,
            self.cfg.sessions_dir.clone(),
            self.clients.clone(),
        ));
        let (session, info) = Session::new(
            rec,
            self.cfg.clone(),
            self.clients.clone(),
            rx,
            (save_tx, written_rx),
            self.prompts.clone(),
            self.changed.clone(),
        );
        let span = tracing::info_span!("session", session = %id);
        let task = tokio::spawn(tracing::Instrument::instrument(session.run(), span));
        self.lock().push(Entry {
            id: id.clone(),
            tx,
            info,
            task,
            saver,
        });
        id
    }

    fn create_default(&self) -> SessionId {
        let cwd = self.cfg.default_cwd.clone();
        let rec = SessionRecord::new(new_id("s"), dir_name(&cwd), cwd, now_ms());
        self.spawn_session(rec, true)
    }

    fn sender(&self, id: &str) -> Option<mpsc::Sender<Cmd>> {
        self.lock()
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.tx.clone())
    }

    /// The most recently active session.
    fn most_recent(&self) -> Option<SessionId> {
        self.session_infos()
            .into_iter()
            .max_by_key(|i| i.last_activity_at)
            .map(|i| i.session_id)
    }

    /// Tells the session to replay itself to `client` and make it active.
    async fn attach(&self, client: &str, session: &str) -> bool {
        self.attach_with(client, session, None).await
    }

    async fn attach_with(&self, client: &str, session: &str, notice: Option<String>) -> bool {
        let Some(tx) = self.sender(session) else {
            return false;
        };
        // Nothing new is started on a worker that is stopping.
        let warm = self.cfg.warm_clis > 0 && !self.draining.is_cancelled();
        let attached = tx
            .send(Cmd::Attach {
                client: client.to_owned(),
                notice,
                warm,
            })
            .await
            .is_ok();
        if attached && warm {
            self.keep_warm(session);
        }
        attached
    }

    /// `session` was opened just now: it is the newest of the warm ones, and the oldest
    /// beyond `warm_clis` is asked to stop its CLI (a session in a turn keeps it; its
    /// idle timeout stops it later).
    fn keep_warm(&self, session: &str) {
        let cooled: Vec<SessionId> = {
            let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
            warm.retain(|s| s != session);
            warm.push_back(session.to_owned());
            let over = warm.len().saturating_sub(self.cfg.warm_clis);
            warm.drain(..over).collect()
        };
        for id in cooled {
            if let Some(tx) = self.sender(&id) {
                // Not waited for here (the caller is attaching a phone), but never
                // dropped: a session it does not reach would keep its CLI.
                tokio::spawn(async move {
                    let _ = tx.send(Cmd::Cool).await;
                });
            }
        }
    }

    /// Called once a client has authenticated: what docs/protocol.md "Connecting" step 4
    /// says it gets, in that order. On a standby, only once it serves: a phone that comes
    /// in the moment it is promoted sees the sessions as the lost worker left them, with
    /// the CLIs it ran, and nothing it sends starts a second CLI on their conversations.
    pub async fn welcome(&self, client: &ClientId) {
        self.serving.cancelled().await;
        self.clients
            .send_msg(client, &ServerMsg::ServerMode { mode: "cli".into() });
        self.clients.send_msg(
            client,
            &ServerMsg::SessionList {
                sessions: self.session_infos(),
            },
        );
        let (spend, day) = (self.cfg.spend.clone(), spend::local_day());
        let asked = day.clone();
        let today = tokio::task::spawn_blocking(move || spend.on(&asked))
            .await
            .unwrap_or_else(|_| spend::Today::none(&day));
        self.clients.send_msg(client, &today.message());
        let active = self.most_recent();
        if let Some(session) = &active {
            self.attach_with(client, session, self.cfg.welcome_notice.clone())
                .await;
        }
        self.clients.send_msg(
            client,
            &ServerMsg::AvailableModels {
                models: self.cfg.models.clone(),
            },
        );
        self.clients.send_msg(
            client,
            &ServerMsg::AvailablePermissionModes {
                modes: PermissionModeInfo::all(),
            },
        );
        let push = self.push_settings(client).await;
        self.clients.send_msg(client, &push);
        if let Some(news) = self.recent_deploy_news() {
            self.clients.send_msg(client, &news);
        }
        // Prompts of the other sessions too: any phone may answer any prompt.
        let others: Vec<_> = self
            .lock()
            .iter()
            .filter(|e| Some(&e.id) != active.as_ref())
            .map(|e| e.tx.clone())
            .collect();
        for tx in others {
            let _ = tx
                .send(Cmd::SendPrompts {
                    client: client.clone(),
                })
                .await;
        }
    }

    /// Handles one authenticated request. Answers to the sender go to its queue.
    pub async fn handle(&self, client: &ClientId, msg: ClientMsg) {
        if let Err(refusal) = self.dispatch(client, msg).await {
            self.clients.send_msg(client, &refusal.to_msg());
        }
    }

    /// Hands an input to its session; the session it went to.
    async fn input(&self, client: &ClientId, m: Input) -> Result<SessionId, Refusal> {
        if self.draining.is_cancelled() {
            return Err(draining());
        }
        let (session_id, tx) = self.target(client, m.session_id)?;
        let (reply, answer) = oneshot::channel();
        tx.send(Cmd::Input {
            text: m.data,
            attachments: m.attachments,
            id: m.client_message_id,
            from: client.clone(),
            reply,
        })
        .await
        .map_err(|_| draining())?;
        answer.await.map_err(|_| draining())??;
        Ok(session_id)
    }

    fn target(
        &self,
        client: &str,
        session: Option<String>,
    ) -> Result<(SessionId, mpsc::Sender<Cmd>), Refusal> {
        let id = session
            .or_else(|| self.clients.active(client))
            .ok_or_else(|| {
                Refusal::new(
                    ErrorCode::SessionNotFound,
                    "no session is selected; send switch_session or create_session first",
                )
            })?;
        let tx = self.sender(&id).ok_or_else(|| not_found(&id))?;
        Ok((id, tx))
    }

    async fn dispatch(&self, client: &ClientId, msg: ClientMsg) -> Result<(), Refusal> {
        match msg {
            ClientMsg::Auth(_) => {
                return Err(Refusal::new(
                    ErrorCode::InvalidMessage,
                    "already authenticated; `auth` is only valid as the first message",
                ));
            }
            ClientMsg::Ping(_) => {
                self.clients.send_msg(
                    client,
                    &ServerMsg::Pong {
                        server_ts: now_ms(),
                    },
                );
            }
            ClientMsg::ListSessions(_) => {
                self.clients.send_msg(
                    client,
                    &ServerMsg::SessionList {
                        sessions: self.session_infos(),
                    },
                );
            }
            ClientMsg::Input(m) => {
                let Some(id) = m.client_message_id.clone() else {
                    return self.input(client, m).await.map(drop);
                };
                // With an id, the client is told either way, by that id: it keeps the
                // input to send again until then.
                let told = match self.input(client, m).await {
                    Ok(session_id) => ServerMsg::InputAccepted {
                        client_message_id: id,
                        session_id,
                    },
                    Err(refusal) => ServerMsg::Error {
                        code: refusal.code,
                        message: refusal.message,
                        request_id: Some(id),
                    },
                };
                self.clients.send_msg(client, &told);
            }
            ClientMsg::Interrupt(m) => {
                let (_, tx) = self.target(client, m.session_id)?;
                let _ = tx.send(Cmd::Interrupt).await;
            }
            ClientMsg::SetModel(m) => {
                let (_, tx) = self.target(client, m.session_id)?;
                let model = self.check_model(&m.model)?;
                let _ = tx.send(Cmd::SetModel { model }).await;
            }
            ClientMsg::SetPermissionMode(m) => {
                let (_, tx) = self.target(client, m.session_id)?;
                let mode = parse_mode(&m.mode)?;
                if mode == PermissionMode::Auto && !m.confirmed {
                    self.clients.send_msg(client, &ServerMsg::ConfirmPermissionMode {
                        mode,
                        warning: "Auto mode lets Claude Code run every tool, edit files and run commands, without asking. Send again with confirmed: true to switch.".into(),
                    });
                    return Ok(());
                }
                if mode == PermissionMode::Auto && !self.cfg.allow_bypass {
                    return Err(Refusal::new(
                        ErrorCode::InvalidMode,
                        "Claude Code refuses to skip permissions when it runs as root; run Chroxy as a normal user (or set IS_SANDBOX=1 inside a disposable sandbox)",
                    ));
                }
                let _ = tx.send(Cmd::SetMode { mode }).await;
            }
            ClientMsg::PermissionResponse(m) => {
                let id = m.request_id.clone();
                let cmd = Cmd::Answer {
                    answer: m,
                    from: client.clone(),
                    device: self.clients.device_name(client),
                };
                self.route_answer(client, &id, cmd).await;
            }
            ClientMsg::UserQuestionResponse(m) => {
                let (answer, answers) = m.resolved();
                let cmd = Cmd::AnswerQuestion {
                    id: m.tool_use_id.clone(),
                    answer,
                    answers,
                    from: client.clone(),
                };
                self.route_answer(client, &m.tool_use_id, cmd).await;
            }
            ClientMsg::SwitchSession(m) => {
                if !self.attach(client, &m.session_id).await {
                    return Err(not_found(&m.session_id));
                }
            }
            ClientMsg::CreateSession(m) => {
                if self.draining.is_cancelled() {
                    return Err(draining());
                }
                let id = self.create(m).await?;
                self.attach(client, &id).await;
                self.broadcast_list();
            }
            ClientMsg::DestroySession(m) => self.destroy(&m.session_id).await?,
            ClientMsg::RenameSession(m) => {
                let tx = self
                    .sender(&m.session_id)
                    .ok_or_else(|| not_found(&m.session_id))?;
                let (done, renamed) = oneshot::channel();
                let _ = tx.send(Cmd::Rename { name: m.name, done }).await;
                let _ = renamed.await;
                self.broadcast_list();
            }
            ClientMsg::ListProviders(_) => {
                self.clients.send_msg(
                    client,
                    &ServerMsg::ProviderList {
                        providers: crate::agent::providers(),
                    },
                );
            }
            ClientMsg::ListSlashCommands(m) => {
                let (_, tx) = self.target(client, m.session_id)?;
                let client = client.clone();
                let _ = tx.send(Cmd::SendSlashCommands { client }).await;
            }
            ClientMsg::ListAgents(m) => {
                let (session_id, _) = self.target(client, m.session_id)?;
                let cwd = self.lock().iter().find(|e| e.id == session_id).map(|e| {
                    let info = e.info.lock().unwrap_or_else(|p| p.into_inner());
                    PathBuf::from(&info.cwd)
                });
                let home = self.cfg.claude_config_dir.clone();
                let found = tokio::task::spawn_blocking(move || {
                    crate::agent::subagents::find(cwd.as_deref(), home.as_deref())
                });
                let agents = found.await.unwrap_or_default();
                self.clients
                    .send_msg(client, &ServerMsg::AgentList { agents, session_id });
            }
            ClientMsg::ListConversations(_) => {
                let senders: Vec<_> = self.lock().iter().map(|e| e.tx.clone()).collect();
                let mut conversations = Vec::new();
                for tx in senders {
                    let (reply, answer) = oneshot::channel();
                    if tx.send(Cmd::Conversation { reply }).await.is_ok() {
                        conversations.extend(answer.await.ok().flatten());
                    }
                }
                conversations.sort_by_key(|c| std::cmp::Reverse(c.modified_at_ms));
                self.clients
                    .send_msg(client, &ServerMsg::ConversationsList { conversations });
            }
            ClientMsg::GetAttachment(m) => {
                let (_, tx) = self.target(client, m.session_id)?;
                let _ = tx
                    .send(Cmd::GetAttachment {
                        id: m.attachment_id,
                        client: client.clone(),
                    })
                    .await;
            }
            // No terminal here to resize (docs/protocol.md).
            ClientMsg::TerminalResize(_) => {}
            ClientMsg::Presence(m) => self.clients.set_visible(client, m.visible),
            ClientMsg::PushSubscribe(_)
            | ClientMsg::PushUnsubscribe(_)
            | ClientMsg::PushEvents(_)
            | ClientMsg::GetPushSettings(_) => self.push_request(client, msg).await?,
            ClientMsg::DeploySource(m) => self.deploy_request(client, m).await?,
        }
        Ok(())
    }

    /// Answers go to the session whose prompt it is; an unknown id is already over.
    async fn route_answer(&self, client: &ClientId, id: &str, cmd: Cmd) {
        let tx = self.prompts.session_of(id).and_then(|s| self.sender(&s));
        let delivered = match tx {
            Some(tx) => tx.send(cmd).await.is_ok(),
            None => false,
        };
        if !delivered {
            self.clients.send_msg(
                client,
                &ServerMsg::PermissionExpired {
                    request_id: id.to_owned(),
                    message: "this prompt was already answered, timed out, or was withdrawn".into(),
                    session_id: self.clients.active(client).unwrap_or_default(),
                },
            );
        }
    }

    /// The id of the model `model` names, by its id or (as Chroxy's clients may) its
    /// full name.
    fn check_model(&self, model: &str) -> Result<String, Refusal> {
        if let Some(known) = self
            .cfg
            .models
            .iter()
            .find(|m| m.id == model || m.full_id == model)
        {
            return Ok(known.id.clone());
        }
        let known: Vec<&str> = self.cfg.models.iter().map(|m| m.id.as_str()).collect();
        Err(Refusal::new(
            ErrorCode::InvalidModel,
            format!(
                "unknown model `{model}`; choose one of: {}",
                known.join(", ")
            ),
        ))
    }

    fn broadcast_list(&self) {
        self.clients.publish(
            Audience::All,
            &ServerMsg::SessionList {
                sessions: self.session_infos(),
            },
        );
    }

    async fn create(&self, m: crate::protocol::CreateSession) -> Result<SessionId, Refusal> {
        let _guard = self.structure.lock().await;
        if self.session_count() >= MAX_SESSIONS {
            return Err(Refusal::new(
                ErrorCode::SessionLimit,
                format!("already {MAX_SESSIONS} sessions; destroy one first"),
            ));
        }
        let cwd = match m.cwd {
            Some(cwd) => {
                let path = PathBuf::from(&cwd);
                if !path.is_absolute() || !path.is_dir() {
                    return Err(Refusal::new(ErrorCode::InvalidCwd, format!("`cwd` must be an existing directory given as an absolute path; `{cwd}` is not")));
                }
                path
            }
            None => self.cfg.default_cwd.clone(),
        };
        let model = m
            .model
            .as_deref()
            .map(|m| self.check_model(m))
            .transpose()?;
        let mode = m.permission_mode.as_deref().map(parse_mode).transpose()?;
        if mode == Some(PermissionMode::Auto) {
            return Err(Refusal::new(ErrorCode::InvalidMode, "a session cannot be created in auto mode; create it, then switch with set_permission_mode and confirmed: true"));
        }
        let name = m
            .name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| dir_name(&cwd));
        let mut rec = SessionRecord::new(new_id("s"), name, cwd, now_ms());
        rec.model = model;
        rec.permission_mode = mode.unwrap_or(PermissionMode::Approve);
        Ok(self.spawn_session(rec, true))
    }

    async fn destroy(&self, id: &str) -> Result<(), Refusal> {
        let _guard = self.structure.lock().await;
        let entry = {
            let mut sessions = self.lock();
            let pos = sessions
                .iter()
                .position(|e| e.id == id)
                .ok_or_else(|| not_found(id))?;
            sessions.remove(pos)
        };
        // A closed session holds no place among the warm ones.
        self.warm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s != id);
        let watchers = self.clients.on_session(id);
        stop_entry(entry, Some(&self.cfg.sessions_dir)).await;
        if self.session_count() == 0 {
            self.create_default();
        }
        self.broadcast_list();
        if let Some(next) = self.most_recent() {
            for client in watchers {
                self.attach(&client, &next).await;
            }
        }
        Ok(())
    }

    /// Starts an orderly stop while phones are still connected: new input is refused
    /// with `DRAINING`, and every waiting prompt is denied and announced.
    pub async fn drain(&self) {
        self.draining.cancel();
        let senders: Vec<_> = self.lock().iter().map(|e| e.tx.clone()).collect();
        for tx in senders {
            let (done, drained) = oneshot::channel();
            if tx.send(Cmd::Drain { done }).await.is_ok() {
                let _ = drained.await;
            }
        }
    }

    /// Waits until no session has a turn running, or `deadline` passes; true if idle.
    pub async fn wait_idle(&self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            // Register before looking, so a change between the look and the wait wakes us.
            let notified = self.changed.notified();
            if !self.session_infos().iter().any(|i| i.is_busy) {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Stops every agent and saves every session. Idempotent.
    pub async fn shutdown(&self) {
        self.draining.cancel();
        let entries: Vec<Entry> = std::mem::take(&mut *self.lock());
        for entry in entries {
            stop_entry(entry, None).await;
        }
    }
}

async fn stop_entry(entry: Entry, delete: Option<&Path>) {
    let (done, stopped) = oneshot::channel();
    if entry
        .tx
        .send(Cmd::Shutdown {
            delete: delete.is_some(),
            done,
        })
        .await
        .is_ok()
    {
        let _ = stopped.await;
    }
    let _ = entry.task.await;
    // The session dropped its end of the save channel; the saver finishes its last write.
    let _ = entry.saver.await;
    if let Some(dir) = delete {
        let path = SessionRecord::path_in(dir, &entry.id);
        if let Err(err) = std::fs::remove_file(&path) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%err, path = %path.display(), "could not delete a destroyed session's file");
            }
        }
    }
}

fn not_found(id: &str) -> Refusal {
    Refusal::new(
        ErrorCode::SessionNotFound,
        format!("no session with id `{id}`"),
    )
}

fn parse_mode(mode: &str) -> Result<PermissionMode, Refusal> {
    PermissionMode::from_wire(mode).ok_or_else(|| {
        Refusal::new(
            ErrorCode::InvalidMode,
            format!("unknown permission mode `{mode}`; use approve, acceptEdits, auto or plan"),
        )
    })
}

/// A short random id with a readable prefix (`s-…`, `c-…`).
pub fn new_id(prefix: &str) -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &uuid[..12])
}

fn dir_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// What a request gets once the worker has begun to shut down.
fn draining() -> Refusal {
    Refusal::new(
        ErrorCode::Draining,
        "the server is shutting down; reconnect in a moment",
    )
}
