//! One session: a task that owns its agent process, history, input queue and text
//! coalescer. Everything that happens to a session passes through this task in order,
//! which is what makes a history replay and the live stream after it line up exactly:
//! a client attaches *inside* the task, between two events, never across one.

mod asking;

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::attachments::{AttachmentStore, Kept};
use super::clients::{frame, Audience, ClientId, Clients, Outbound};
use super::prompts::{PromptIndex, Prompts};
use super::record::SessionRecord;
use super::SessionsConfig;
use crate::agent::{self, Agent, AgentEvent, AgentOutput, AgentSpec, TurnResult};
use crate::protocol::{
    now_ms, Attachment, AttachmentInfo, Base64Data, ConversationInfo, ErrorCode, MessageType,
    PermissionMode, PermissionResponse, ServerMsg, SessionInfo, SlashCommand, HISTORY_LIMIT,
    MAX_QUEUED_INPUTS, MAX_TOOL_RESULT_CHARS,
};
use crate::push::{Notice, NoticeKind};

/// Replayable history is also bounded in bytes: 500 messages of a chatty agent (whole
/// files written by a tool, long answers) must not grow a worker without limit.
const HISTORY_BUDGET_BYTES: usize = 8 * 1024 * 1024;
/// Longest a session waits for its state to reach the disk before telling phones.
/// How much of a conversation's first input `conversations_list` shows.
const PREVIEW_CHARS: usize = 120;
const PERSIST_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A request refused with a protocol error, for the client that asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Protocol error code.
    pub code: ErrorCode,
    /// What to tell the user.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// As an `error` message.
    pub fn to_msg(&self) -> ServerMsg {
        ServerMsg::error(self.code, self.message.clone())
    }
}

/// An input as Claude Code is sent it: the typed text and its files' content blocks;
/// and as the history keeps it.
#[derive(Debug)]
struct UserTurn {
    text: String,
    blocks: Vec<Value>,
    entry: Arc<ServerMsg>,
    /// Small enough to travel in the keeper's note ([`NOTED_INPUT_MAX`]).
    notable: bool,
}

/// The largest input (as JSON) the supervisor is told of with its turn; a larger one is
/// on disk before the CLI reads it. (A note is one packet, [`crate::keeper`].)
const NOTED_INPUT_MAX: usize = 32 * 1024;

/// The largest ended turn ([`approx_size`] of its entries) the supervisor is told of;
/// a larger one is on disk before its `result` reaches a phone. Escaped as JSON it may
/// grow, and still fits one note with room to spare.
const NOTED_TURN_MAX: usize = 48 * 1024;

/// Requests to a session task.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// Make this the client's active session and replay the history to it.
    Attach {
        client: ClientId,
        /// Shown after the history (the welcome's notice), never stored.
        notice: Option<String>,
        /// Start the CLI now, so the first input finds it up.
        warm: bool,
    },
    /// Stop the CLI if it is idle (it is no longer among the warm ones).
    Cool,
    /// A user turn.
    Input {
        text: String,
        /// Files sent with it (already checked by the parser).
        attachments: Vec<Attachment>,
        /// The sender's `clientMessageId`: the same id twice runs once.
        id: Option<String>,
        from: ClientId,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    /// Send a phone a file of this session's history (`get_attachment`).
    GetAttachment { id: String, client: ClientId },
    /// Stop the current turn.
    Interrupt,
    /// Change the model (already validated).
    SetModel { model: String },
    /// Change the permission mode (already validated and confirmed).
    SetMode { mode: PermissionMode },
    /// New display name.
    Rename {
        name: String,
        done: oneshot::Sender<()>,
    },
    /// A phone's answer to a permission prompt.
    Answer {
        answer: PermissionResponse,
        from: ClientId,
        device: String,
    },
    /// A phone's answer to an AskUserQuestion.
    AnswerQuestion {
        id: String,
        answer: String,
        answers: Option<std::collections::BTreeMap<String, String>>,
        from: ClientId,
    },
    /// Send this session's waiting prompts to a phone that is looking at another session.
    SendPrompts { client: ClientId },
    /// Send a phone `slash_commands`: what this session's CLI offers.
    SendSlashCommands { client: ClientId },
    /// The Claude Code conversation this session holds, if it has one yet.
    Conversation {
        reply: oneshot::Sender<Option<ConversationInfo>>,
    },
    /// The record on disk, written by the worker this one replaced after this one had
    /// loaded it: take it if nothing happened here since, and show it to the phones.
    Resync { rec: Box<SessionRecord> },
    /// The worker is stopping: deny what waits and tell the phones, while they are
    /// still connected.
    Drain { done: oneshot::Sender<()> },
    /// The CLI the lost worker ran for this session: carry on with it.
    Adopt { kept: Box<crate::keeper::Kept> },
    /// Stop the agent, save (or delete) the state, end the task.
    Shutdown {
        delete: bool,
        done: oneshot::Sender<()>,
    },
}

/// A control request we sent and what to do with its answer.
#[derive(Debug)]
enum Pending {
    Initialize,
    Interrupt,
    SetModel(String),
    SetMode(PermissionMode),
}

/// Shared, always-current summary for `session_list` (read without asking the task).
pub(crate) type InfoCell = Arc<Mutex<SessionInfo>>;

pub(crate) struct Session {
    rec: SessionRecord,
    cfg: Arc<SessionsConfig>,
    clients: Clients,
    info: InfoCell,
    cmds: mpsc::Receiver<Cmd>,
    events: mpsc::Receiver<(u64, AgentOutput)>,
    events_tx: mpsc::Sender<(u64, AgentOutput)>,
    agent: Option<Agent>,
    generation: u64,
    agent_ready: bool,
    /// The agent was started with `--resume` and has not said `init` yet.
    resuming: bool,
    pending: std::collections::HashMap<String, Pending>,
    /// Permission prompts and questions the agent is waiting on.
    prompts: Prompts,
    /// The CLI's `can_use_tool` requests behind the waiting prompts, by request id, as
    /// it sent them: what a successor needs to ask again ([`Self::sync_note`]).
    asked: std::collections::HashMap<String, Value>,
    /// What the supervisor was last told of the CLI (its key; `None`: nothing yet).
    noted: Option<NoteKey>,
    /// Turns started, for [`NoteKey`].
    turns: u64,
    busy: bool,
    interrupted: bool,
    /// The input of the running turn, kept to retry it if `--resume` fails.
    current_input: Option<UserTurn>,
    /// The turn that ended last, its input through its `result`, for the supervisor's
    /// note until the next turn starts ([`Self::sync_note`]); empty when it would not
    /// fit in one.
    ended: Vec<Arc<ServerMsg>>,
    queue: VecDeque<UserTurn>,
    /// The files phones sent with their inputs.
    files: AttachmentStore,
    /// Approximate size of `rec.history`, kept under [`HISTORY_BUDGET_BYTES`].
    history_bytes: usize,
    /// When an unanswered `interrupt` gives up on the agent.
    interrupt_deadline: Option<Instant>,
    /// When an idle CLI is stopped (`cli_idle` after it last went idle).
    idle_deadline: Option<Instant>,
    /// What the last CLI said its slash commands are (for phones that attach later).
    slash_commands: Vec<SlashCommand>,
    /// `total_cost_usd` of the last result, and of which CLI (its generation): the CLI
    /// counts from its start, so a turn's cost is the difference.
    cost_so_far: Option<(u64, f64)>,
    /// The open text block: our message id and its full text so far.
    open_text: Option<(String, String)>,
    /// Text not yet sent, and when it must be.
    coalesced: String,
    flush_at: Option<Instant>,
    saver: watch::Sender<super::saver::Pending>,
    /// The number of the last record on disk.
    written: watch::Receiver<u64>,
    /// The number of the last record handed to the saver.
    saves: u64,
    changed: Arc<tokio::sync::Notify>,
}

impl Session {
    pub(crate) fn new(
        rec: SessionRecord,
        cfg: Arc<SessionsConfig>,
        clients: Clients,
        cmds: mpsc::Receiver<Cmd>,
        (saver, written): (watch::Sender<super::saver::Pending>, watch::Receiver<u64>),
        index: PromptIndex,
        changed: Arc<tokio::sync::Notify>,
    ) -> (Self, InfoCell) {
        let info = Arc::new(Mutex::new(info_of(&rec, false)));
        let (events_tx, events) = mpsc::channel(256);
        let history_bytes = rec.history.iter().map(|m| approx_size(m)).sum();
        let prompts = Prompts::new(rec.session_id.clone(), cfg.permission_timeout, index);
        let files = AttachmentStore::new(&cfg.sessions_dir, &rec.session_id);
        let mut session = Self {
            rec,
            cfg,
            clients,
            info: info.clone(),
            cmds,
            events,
            events_tx,
            agent: None,
            generation: 0,
            agent_ready: false,
            resuming: false,
            pending: Default::default(),
            prompts,
            asked: Default::default(),
            noted: None,
            busy: false,
            interrupted: false,
            current_input: None,
            ended: Vec::new(),
            turns: 0,
            queue: VecDeque::new(),
            files,
            history_bytes,
            interrupt_deadline: None,
            idle_deadline: None,
            slash_commands: Vec::new(),
            cost_so_far: None,
            open_text: None,
            coalesced: String::new(),
            flush_at: None,
            saver,
            written,
            saves: 0,
            changed,
        };
        session.leave_restored_auto();
        (session, info)
    }

    /// A session saved in `auto` (no prompts at all) comes back asking. A person
    /// confirmed skipping every prompt for the agent that ran then; whatever restarted
    /// the worker since (a crash, a deploy, a rollback) is not that person confirming
    /// again.
    fn leave_restored_auto(&mut self) {
        if self.rec.permission_mode != PermissionMode::Auto {
            return;
        }
        tracing::warn!("session restored in auto mode; back to approve until confirmed again");
        self.rec.permission_mode = PermissionMode::Approve;
        self.notice(
            MessageType::System,
            "This session was in auto mode (no permission prompts) before the server restarted. It asks again now; switch to auto again to skip prompts.",
        );
        self.publish(
            Audience::All,
            &ServerMsg::PermissionModeChanged {
                mode: PermissionMode::Approve,
                session_id: self.rec.session_id.clone(),
            },
        );
        // Not saved here: a save would count as a change made by this worker, and a
        // deploy's `Resync` would then refuse the previous worker's last state. The
        // next save writes it; until then every load does this again.
        self.refresh_info();
    }

    pub(crate) async fn run(mut self) {
        loop {
            self.sync_note();
            let flush_at = self.flush_at;
            let prompt_deadline = self.prompts.next_deadline();
            let interrupt_deadline = self.interrupt_deadline;
            let idle_deadline = self.idle_deadline;
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => {
                        if self.on_cmd(cmd).await.is_break() {
                            return;
                        }
                    }
                    // The hub dropped us without a shutdown: stop quietly, state saved.
                    None => { self.shutdown(false).await; return; }
                },
                Some((generation, out)) = self.events.recv() => self.on_agent(generation, out).await,
                _ = tokio::time::sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                    self.flush_text();
                }
                _ = tokio::time::sleep_until(prompt_deadline.unwrap_or_else(Instant::now)), if prompt_deadline.is_some() => {
                    self.expire_prompts().await;
                }
                _ = tokio::time::sleep_until(interrupt_deadline.unwrap_or_else(Instant::now)), if interrupt_deadline.is_some() => {
                    self.agent_unresponsive().await;
                }
                _ = tokio::time::sleep_until(idle_deadline.unwrap_or_else(Instant::now)), if idle_deadline.is_some() => {
                    self.cool("idle");
                }
            }
        }
    }

    // ---- publishing -------------------------------------------------------------

    fn publish(&self, audience: Audience<'_>, msg: &ServerMsg) {
        self.clients.publish(audience, msg);
    }

    /// Publishes to the session's clients and keeps it for replay.
    fn record(&mut self, msg: ServerMsg) {
        self.publish(Audience::Active(&self.rec.session_id), &msg);
        self.remember(msg);
    }

    fn remember(&mut self, msg: impl Into<Arc<ServerMsg>>) -> Arc<ServerMsg> {
        let msg = msg.into();
        self.history_bytes += approx_size(&msg);
        self.rec.history.push_back(msg.clone());
        while self.rec.history.len() > 1
            && (self.rec.history.len() > HISTORY_LIMIT || self.history_bytes > HISTORY_BUDGET_BYTES)
        {
            if let Some(old) = self.rec.history.pop_front() {
                self.history_bytes = self.history_bytes.saturating_sub(approx_size(&old));
                // A file nobody can replay any more is let go with its entry.
                if let ServerMsg::Message { attachments, .. } = &*old {
                    self.files.forget(attachments.iter().map(|a| a.id.clone()));
                }
            }
        }
        msg
    }

    fn notice(&mut self, kind: MessageType, content: impl Into<String>) {
        let msg = ServerMsg::Message {
            message_type: kind,
            content: content.into(),
            timestamp: now_ms(),
            session_id: self.rec.session_id.clone(),
            client_message_id: None,
            attachments: Vec::new(),
        };
        self.record(msg);
    }

    fn session_error(&self, code: Option<ErrorCode>, message: String) {
        let msg = ServerMsg::SessionError {
            message,
            code,
            session_id: Some(self.rec.session_id.clone()),
        };
        self.publish(Audience::All, &msg);
    }

    fn refresh_info(&self) {
        let fresh = info_of(&self.rec, self.busy);
        *self.info.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        self.changed.notify_waiters();
    }

    fn save(&mut self) {
        self.refresh_info();
        // The saver task writes the newest value; older unsaved ones are superseded.
        self.saves += 1;
        self.saver
            .send_replace(Some((self.saves, self.rec.clone())));
    }

    /// Saves and waits until it is on disk, for the moments a phone is told something
    /// it will rely on ("your input is taken", "the turn is over"): a worker killed
    /// right after must not forget it.
    async fn persist(&mut self) {
        self.save();
        self.saved(self.saves).await;
    }

    /// Waits until the record numbered `number` (or a later one) is on disk. Bounded, so
    /// a stuck disk delays, never freezes.
    async fn saved(&mut self, number: u64) {
        let on_disk = self.written.wait_for(|&w| w >= number);
        if tokio::time::timeout(PERSIST_WAIT, on_disk).await.is_err() {
            tracing::warn!("session state not on disk after {PERSIST_WAIT:?}; going on");
        }
    }

    // ---- commands ---------------------------------------------------------------

    async fn on_cmd(&mut self, cmd: Cmd) -> ControlFlow<()> {
        match cmd {
            Cmd::Attach {
                client,
                notice,
                warm,
            } => {
                self.attach(&client, notice);
                if warm {
                    self.warm().await;
                }
            }
            Cmd::Cool => self.cool("no longer among the warm sessions"),
            Cmd::Input {
                text,
                attachments,
                id,
                from,
                reply,
            } => {
                let result = self.input(text, attachments, id, &from).await;
                let _ = reply.send(result);
            }
            Cmd::GetAttachment { id, client } => self.send_attachment(id, &client).await,
            Cmd::Interrupt => self.interrupt().await,
            Cmd::SetModel { model } => self.set_model(model).await,
            Cmd::SetMode { mode } => self.set_mode(mode).await,
            Cmd::Rename { name, done } => {
                self.rec.name = name;
                self.save();
                let _ = done.send(());
            }
            Cmd::Answer {
                answer,
                from,
                device,
            } => self.answer(answer, &from, &device).await,
            Cmd::AnswerQuestion {
                id,
                answer,
                answers,
                from,
            } => self.answer_question(id, answer, answers, &from).await,
            Cmd::Resync { rec } => self.resync(*rec).await,
            Cmd::SendSlashCommands { client } => self.clients.send_msg(
                &client,
                &ServerMsg::SlashCommands {
                    commands: self.slash_commands.clone(),
                    session_id: self.rec.session_id.clone(),
                },
            ),
            Cmd::Conversation { reply } => {
                let _ = reply.send(self.conversation());
            }
            Cmd::SendPrompts { client } => {
                let now = Instant::now();
                let frames: Vec<_> = self.prompts.messages(now).iter().map(frame).collect();
                if !frames.is_empty() {
                    self.clients.send_to(&client, Outbound::Batch(frames));
                }
            }
            Cmd::Drain { done } => {
                self.deny_all_prompts("the server is stopping").await;
                let _ = done.send(());
            }
            Cmd::Adopt { kept } => self.adopt(*kept).await,
            Cmd::Shutdown { delete, done } => {
                self.shutdown(delete).await;
                let _ = done.send(());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn conversation(&self) -> Option<ConversationInfo> {
        let conversation_id = self.rec.agent_session_id.clone()?;
        let preview = self.rec.history.iter().find_map(|m| match &**m {
            ServerMsg::Message {
                message_type: MessageType::UserInput,
                content,
                ..
            } => Some(content.chars().take(PREVIEW_CHARS).collect()),
            _ => None,
        });
        Some(ConversationInfo {
            conversation_id,
            session_id: self.rec.session_id.clone(),
            project_name: self
                .rec
                .cwd
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cwd: self.rec.cwd.display().to_string(),
            modified_at_ms: self.rec.last_activity_at,
            preview,
        })
    }

    async fn resync(&mut self, rec: SessionRecord) {
        // A CLI started ahead of input (a phone looked at the session) changed nothing.
        let untouched = self.saves == 0 && !self.busy && self.queue.is_empty();
        if !untouched {
            // Both workers changed it; this one's phones have seen this one's version.
            tracing::warn!("session changed here since it was loaded; keeping this worker's state");
            return;
        }
        if rec.history == self.rec.history && rec.agent_session_id == self.rec.agent_session_id {
            return;
        }
        tracing::info!(
            history = rec.history.len(),
            "taking the state the previous worker saved"
        );
        // Started for the conversation as it was loaded: it would resume the wrong one.
        let warm = self.agent.is_some();
        self.cool("the previous worker's saved state replaces the one it was started for");
        self.history_bytes = rec.history.iter().map(|m| approx_size(m)).sum();
        self.rec = rec;
        self.leave_restored_auto();
        self.refresh_info();
        for client in self.clients.on_session(&self.rec.session_id) {
            self.attach(&client, None);
        }
        if warm {
            self.warm().await;
        }
    }

    fn attach(&mut self, client: &str, notice: Option<String>) {
        self.flush_text();
        self.clients.set_active(client, &self.rec.session_id);
        let id = self.rec.session_id.clone();
        let mut frames = vec![
            frame(&ServerMsg::SessionSwitched {
                session_id: id.clone(),
                name: self.rec.name.clone(),
                cwd: self.rec.cwd.display().to_string(),
            }),
            frame(&ServerMsg::HistoryReplayStart {
                session_id: id.clone(),
                full_history: true,
            }),
        ];
        frames.extend(self.rec.history.iter().map(|m| frame(m)));
        frames.push(frame(&ServerMsg::HistoryReplayEnd {
            session_id: id.clone(),
        }));
        if let Some(content) = notice {
            frames.push(frame(&ServerMsg::Message {
                message_type: MessageType::System,
                content,
                timestamp: now_ms(),
                session_id: id.clone(),
                client_message_id: None,
                attachments: Vec::new(),
            }));
        }
        if self.busy {
            frames.push(frame(&ServerMsg::AgentBusy {
                session_id: id.clone(),
            }));
        }
        // A block being streamed right now: show what came so far, then live deltas.
        if let Some((message_id, text)) = &self.open_text {
            frames.push(frame(&ServerMsg::StreamStart {
                message_id: message_id.clone(),
                session_id: id.clone(),
            }));
            if !text.is_empty() {
                frames.push(frame(&ServerMsg::StreamDelta {
                    message_id: message_id.clone(),
                    delta: text.clone(),
                    session_id: id.clone(),
                }));
            }
        }
        // docs/protocol.md: a phone that arrives while a prompt waits gets it, with the time left.
        frames.extend(self.prompts.messages(Instant::now()).iter().map(frame));
        match agent::find_claude(self.cfg.claude.as_deref()) {
            Ok(_) => frames.push(frame(&ServerMsg::ClaudeReady {
                session_id: id.clone(),
                slash_commands: self.slash_commands.clone(),
            })),
            Err(err) => frames.push(frame(&ServerMsg::SessionError {
                message: err.to_string(),
                code: Some(ErrorCode::AgentUnavailable),
                session_id: Some(id),
            })),
        }
        self.clients.send_to(client, Outbound::Batch(frames));
    }

    async fn input(
        &mut self,
        text: String,
        attachments: Vec<Attachment>,
        id: Option<String>,
        from: &str,
    ) -> Result<(), Refusal> {
        // Sent again after a dropped connection, though it had arrived: taken already.
        if id.as_deref().is_some_and(|id| self.took(id)) {
            return Ok(());
        }
        let queued = self.busy || !self.queue.is_empty();
        if queued && self.queue.len() >= MAX_QUEUED_INPUTS {
            return Err(Refusal::new(
                ErrorCode::QueueFull,
                format!("{MAX_QUEUED_INPUTS} inputs are already waiting for this session; wait for the current turn to finish"),
            ));
        }
        if !queued {
            // Start the agent first: if it cannot start, the input is refused, not
            // half-taken.
            self.ensure_agent().await?;
        }
        let kept = self.keep_files(attachments).await?;
        let (infos, blocks) = kept.into_iter().map(|k| (k.info, k.block)).unzip();
        let entry = self.accept_input(&text, infos, id, from);
        // Written while the turn starts; on disk before the phone is told the input is
        // taken (`start_turn` says why the CLI need not wait for it).
        self.save();
        let saving = self.saves;
        let notable = serde_json::to_vec(&entry).is_ok_and(|j| j.len() <= NOTED_INPUT_MAX);
        let turn = UserTurn {
            text,
            blocks,
            entry,
            notable,
        };
        if queued {
            self.queue.push_back(turn);
        } else {
            self.start_turn(turn).await;
        }
        self.saved(saving).await;
        Ok(())
    }

    /// Stores an input's files; a disk that refuses them refuses the input (the phone
    /// still has it, and is told why).
    async fn keep_files(&self, attachments: Vec<Attachment>) -> Result<Vec<Kept>, Refusal> {
        if attachments.is_empty() {
            return Ok(Vec::new());
        }
        self.files.keep(attachments).await.map_err(|err| {
            tracing::warn!(%err, "could not store an input's attachments");
            Refusal::new(
                ErrorCode::AttachmentNotStored,
                format!("the attached files could not be stored on the computer, so the message was not sent: {err}"),
            )
        })
    }

    /// Answers `get_attachment` with the file, if the history still lists it and the
    /// folder still has it.
    async fn send_attachment(&self, id: String, client: &str) {
        let info = self.rec.history.iter().rev().find_map(|m| match &**m {
            ServerMsg::Message { attachments, .. } => {
                attachments.iter().find(|a| a.id == id).cloned()
            }
            _ => None,
        });
        let bytes = match &info {
            Some(_) => self.files.read(&id).await,
            None => None,
        };
        let msg = match (info, bytes) {
            (Some(info), Some(bytes)) => ServerMsg::Attachment {
                session_id: self.rec.session_id.clone(),
                attachment_id: info.id,
                name: info.name,
                media_type: info.media_type,
                data: Base64Data(bytes),
            },
            _ => ServerMsg::Error {
                code: ErrorCode::AttachmentNotFound,
                message: "this session no longer keeps that attachment (older files are let go past 64 MiB per session)".into(),
                request_id: Some(id),
            },
        };
        self.clients.send_msg(client, &msg);
    }

    /// Whether an input with this `clientMessageId` is in the history (the history is
    /// persisted, so this holds across a worker's restart).
    fn took(&self, id: &str) -> bool {
        self.rec.history.iter().rev().any(|m| {
            matches!(&**m, ServerMsg::Message {
                message_type: MessageType::UserInput,
                client_message_id: Some(taken),
                ..
            } if taken == id)
        })
    }

    /// Tells the other phones of an input and adds it to the history; returns its entry.
    fn accept_input(
        &mut self,
        text: &str,
        attachments: Vec<AttachmentInfo>,
        id: Option<String>,
        from: &str,
    ) -> Arc<ServerMsg> {
        let timestamp = now_ms();
        // The sender already shows what it typed; every other phone is told, whichever
        // session it looks at (Chroxy's clients show it where it belongs).
        self.publish(
            Audience::AllExcept(from),
            &ServerMsg::UserInput {
                session_id: self.rec.session_id.clone(),
                client_id: from.to_owned(),
                text: text.to_owned(),
                message_id: id.clone(),
                timestamp,
                attachments: attachments.clone(),
            },
        );
        let entry = self.remember(ServerMsg::Message {
            message_type: MessageType::UserInput,
            content: text.to_owned(),
            timestamp,
            session_id: self.rec.session_id.clone(),
            client_message_id: id,
            attachments,
        });
        self.rec.last_activity_at = now_ms();
        entry
    }

    /// Starts the CLI ahead of input. Failing is not an error yet: the first input
    /// tries again and tells the phone why.
    async fn warm(&mut self) {
        if self.agent.is_some() {
            return;
        }
        match self.ensure_agent().await {
            Ok(()) => {
                tracing::debug!("CLI started ahead of input");
                self.went_idle();
            }
            Err(refusal) => {
                tracing::debug!(why = %refusal.message, "could not start the CLI ahead of input")
            }
        }
    }

    /// The CLI has nothing to do from now: it is stopped after `cli_idle`.
    fn went_idle(&mut self) {
        self.idle_deadline = self.cfg.cli_idle.map(|idle| Instant::now() + idle);
    }

    /// Stops the CLI if nothing needs it: no turn, nothing queued, no prompt waiting.
    /// Its conversation resumes (`--resume`) on the next input.
    fn cool(&mut self, why: &str) {
        self.idle_deadline = None;
        // Every waiting prompt has a deadline.
        if self.busy || !self.queue.is_empty() || self.prompts.next_deadline().is_some() {
            return;
        }
        if let Some(agent) = self.agent.take() {
            tracing::info!(why, "stopping an idle CLI");
            // Its exit (seconds, for a CLI slow to go) is not this session's to wait
            // for: an input meanwhile starts the next CLI at once. Its last words
            // carry an old generation and are ignored.
            tokio::spawn(agent.shutdown());
            self.agent_ready = false;
            self.pending.clear();
        }
    }

    async fn ensure_agent(&mut self) -> Result<(), Refusal> {
        if self.agent.is_some() {
            return Ok(());
        }
        let unavailable =
            |e: agent::AgentError| Refusal::new(ErrorCode::AgentUnavailable, e.to_string());
        let program = agent::find_claude(self.cfg.claude.as_deref()).map_err(unavailable)?;
        let spec = AgentSpec {
            program,
            cwd: self.rec.cwd.clone(),
            model: self.rec.model.clone(),
            mode: self.rec.permission_mode,
            resume: self.rec.agent_session_id.clone(),
            allow_bypass: self.cfg.allow_bypass,
        };
        self.generation += 1;
        let keep = self.cfg.keeper.as_ref().map(|link| agent::Keep {
            link,
            session: &self.rec.session_id,
        });
        let mut agent = Agent::spawn(
            &spec,
            self.generation,
            &self.cfg.agent_env,
            self.events_tx.clone(),
            keep,
        )
        .map_err(unavailable)?;
        self.noted = None;
        self.resuming = spec.resume.is_some();
        self.agent_ready = false;
        match agent.control("initialize", json!({"hooks": null})).await {
            Ok(id) => {
                self.pending.insert(id, Pending::Initialize);
            }
            Err(e) => return Err(unavailable(e)),
        }
        self.agent = Some(agent);
        Ok(())
    }

    /// Carries on with the CLI the lost worker ran for this session, as that worker
    /// last noted it: a turn still running, the prompts it waits on. A CLI started here
    /// meanwhile (ahead of input) is stopped; a turn already started here wins, and the
    /// lost worker's CLI is stopped instead.
    async fn adopt(&mut self, kept: crate::keeper::Kept) {
        let note = kept.note.clone();
        let keeper = self.cfg.keeper.as_ref();
        if self.busy {
            tracing::warn!(
                "a turn started here before the lost worker's CLI arrived; stopping that CLI"
            );
            if let Ok(agent) = Agent::adopt(kept, 0, self.events_tx.clone(), keeper) {
                tokio::spawn(agent.shutdown());
            }
            return;
        }
        self.generation += 1;
        let agent = match Agent::adopt(kept, self.generation, self.events_tx.clone(), keeper) {
            Ok(agent) => agent,
            Err(err) => {
                tracing::warn!(%err, "cannot take over the lost worker's CLI");
                return;
            }
        };
        if let Some(own) = self.agent.replace(agent) {
            // Started ahead of input here; the conversation is the adopted CLI's.
            tokio::spawn(own.shutdown());
        }
        self.agent_ready = true;
        self.resuming = false;
        self.pending.clear();
        self.noted = None;
        self.slash_commands = note.commands;
        self.cost_so_far = note.cost.map(|cost| (self.generation, cost));
        self.idle_deadline = None;
        let input = match note.busy {
            true => note.input.clone(),
            false => note.ended.first().cloned(),
        };
        let mut changed = false;
        if let Some(input) = input {
            // The lost worker died between its CLI's stdin and the disk: what runs (or
            // ran) is this input's turn.
            if !self.rec.history.iter().any(|m| **m == *input) {
                tracing::info!("the lost worker's last input was not on disk; adding it");
                self.remember(input);
                changed = true;
            }
        }
        // It may have died after telling the phones the turn was over and before the
        // disk had all of it: the rest of the turn is the note's. (Inputs queued
        // meanwhile are among its entries, and on disk already.)
        let ended = note.ended.split_first().and_then(|(input, rest)| {
            let at = self.rec.history.iter().rposition(|m| **m == **input)?;
            Some((at + 1, rest))
        });
        if let Some((after, rest)) = ended {
            for entry in rest {
                if !self.rec.history.iter().skip(after).any(|m| **m == **entry) {
                    self.remember(entry.clone());
                    changed = true;
                }
            }
        }
        if changed {
            self.save();
        }
        // A turn whose result is saved is over, whatever the note (sent a moment before).
        if note.busy && self.rec.cut_short() {
            self.turn_began();
        } else {
            self.went_idle();
        }
        for ask in note.asks {
            self.on_control_request(ask.request_id, "can_use_tool", ask.request)
                .await;
        }
    }

    /// Tells the supervisor what a successor would need to carry on with this CLI, when
    /// it changed: whether a turn runs and its input, the prompts waiting, the slash
    /// commands, the cost. Returns whether it went, once it has, if it was sent.
    fn sync_note(&mut self) -> Option<oneshot::Receiver<bool>> {
        let agent = self.agent.as_ref()?;
        let asks: Vec<String> = self.prompts.cli_requests().map(str::to_owned).collect();
        let cost = self
            .cost_so_far
            .filter(|(generation, _)| *generation == self.generation)
            .map(|(_, cost)| cost);
        let key = NoteKey {
            busy: self.busy,
            turn: self.turns,
            asks,
            commands: self.slash_commands.len(),
            cost: cost.map(f64::to_bits),
            ended: self.ended.len(),
        };
        if self.noted.as_ref() == Some(&key) {
            return None;
        }
        self.asked.retain(|id, _| key.asks.contains(id));
        let asks = key
            .asks
            .iter()
            .filter_map(|id| {
                Some(crate::keeper::Ask {
                    request_id: id.clone(),
                    request: self.asked.get(id)?.clone(),
                })
            })
            .collect();
        let input = self
            .current_input
            .as_ref()
            .filter(|turn| self.busy && turn.notable)
            .map(|turn| turn.entry.clone());
        let sent = agent.note(crate::keeper::AgentNote {
            busy: self.busy,
            input,
            asks,
            commands: self.slash_commands.clone(),
            cost,
            ended: self.ended.clone(),
        });
        self.noted = Some(key);
        sent
    }

    /// A turn runs from now: every phone is told.
    fn turn_began(&mut self) {
        self.busy = true;
        self.idle_deadline = None;
        self.interrupted = false;
        self.publish(
            Audience::All,
            &ServerMsg::AgentBusy {
                session_id: self.rec.session_id.clone(),
            },
        );
        self.refresh_info();
    }

    async fn start_turn(&mut self, turn: UserTurn) {
        // What the note says from now; the phones are told once it is safe (below).
        self.busy = true;
        let notable = turn.notable;
        self.turns += 1;
        self.current_input = Some(turn);
        self.ended.clear();
        // The CLI must not read an input that a successor could not know of: a worker
        // killed right after would leave a CLI running a turn its successor has no
        // record of, and the phone (never told the input was taken) would send it again
        // for a second turn. The supervisor's note is a packet away; the disk is an
        // fsync or two (most of a millisecond, more when the machine is busy), so the
        // input waits for the disk only when the note cannot carry it.
        let noted = match self.sync_note() {
            Some(sent) if notable => sent.await.unwrap_or(false),
            _ => false,
        };
        if !noted {
            // Every save so far includes this input.
            self.saved(self.saves).await;
        }
        // Only now is any phone told: a successor of a worker killed after that knows
        // of the turn.
        self.turn_began();
        let sent = match (&self.agent, &self.current_input) {
            (Some(agent), Some(turn)) => agent.send_user(&turn.text, &turn.blocks).await.is_ok(),
            _ => false,
        };
        if !sent {
            // The process died between start and now; its Exited event ends the turn.
            tracing::warn!("agent input closed before the turn could be sent");
        }
    }

    async fn next_from_queue(&mut self) {
        while let Some(turn) = self.queue.pop_front() {
            match self.ensure_agent().await {
                Ok(()) => {
                    self.start_turn(turn).await;
                    return;
                }
                Err(refusal) => {
                    self.session_error(Some(refusal.code), refusal.message);
                    self.queue.clear();
                }
            }
        }
    }

    async fn interrupt(&mut self) {
        if !self.busy {
            return;
        }
        if let Some(agent) = self.agent.as_mut() {
            if let Ok(id) = agent.control("interrupt", json!({})).await {
                self.interrupted = true;
                self.interrupt_deadline = Some(Instant::now() + self.cfg.interrupt_grace);
                self.pending.insert(id, Pending::Interrupt);
            }
        }
    }

    async fn set_model(&mut self, model: String) {
        if let Some(agent) = self.agent.as_mut() {
            if let Ok(id) = agent.control("set_model", json!({"model": model})).await {
                self.pending.insert(id, Pending::SetModel(model));
                return;
            }
        }
        // No running agent: the next one starts with --model.
        self.model_applied(model);
    }

    fn model_applied(&mut self, model: String) {
        self.rec.model = Some(model.clone());
        self.save();
        self.publish(
            Audience::All,
            &ServerMsg::ModelChanged {
                model,
                session_id: self.rec.session_id.clone(),
            },
        );
    }

    async fn set_mode(&mut self, mode: PermissionMode) {
        if let Some(agent) = self.agent.as_mut() {
            if let Ok(id) = agent
                .control(
                    "set_permission_mode",
                    json!({"mode": agent::cli_mode(mode)}),
                )
                .await
            {
                self.pending.insert(id, Pending::SetMode(mode));
                return;
            }
        }
        self.mode_applied(mode);
    }

    fn mode_applied(&mut self, mode: PermissionMode) {
        self.rec.permission_mode = mode;
        self.save();
        self.publish(
            Audience::All,
            &ServerMsg::PermissionModeChanged {
                mode,
                session_id: self.rec.session_id.clone(),
            },
        );
    }

    async fn shutdown(&mut self, delete: bool) {
        self.flush_text();
        let why = if delete {
            "the session was closed"
        } else {
            "the server is stopping"
        };
        self.deny_all_prompts(why).await;
        if let Some(agent) = self.agent.take() {
            agent.shutdown().await;
        }
        if delete {
            // Nothing more to save; the hub removes the file once the saver is done, so
            // no late write can bring a destroyed session back.
            self.saver.send_replace(None);
            self.files.remove_all();
        } else {
            self.save();
        }
    }

    // ---- agent output -----------------------------------------------------------

    async fn on_agent(&mut self, generation: u64, out: AgentOutput) {
        if self.agent.as_ref().map(Agent::generation) != Some(generation) {
            return; // a replaced process's last words
        }
        match out {
            AgentOutput::Event(event) => self.on_event(event).await,
            AgentOutput::Exited { status } => self.on_exit(status).await,
        }
    }

    async fn on_event(&mut self, event: AgentEvent) {
        let sid = self.rec.session_id.clone();
        match event {
            AgentEvent::Init { session_id, .. } => {
                self.resuming = false;
                if self.rec.agent_session_id.as_deref() != Some(&session_id) {
                    self.rec.agent_session_id = Some(session_id);
                    self.save();
                }
            }
            AgentEvent::TextStart { message_id } => {
                self.close_text();
                self.publish(
                    Audience::Active(&sid),
                    &ServerMsg::StreamStart {
                        message_id: message_id.clone(),
                        session_id: sid.clone(),
                    },
                );
                self.open_text = Some((message_id, String::new()));
            }
            AgentEvent::TextDelta { text } => {
                let Some((_, full)) = self.open_text.as_mut() else {
                    return;
                };
                full.push_str(&text);
                self.coalesced.push_str(&text);
                if self.cfg.coalesce.is_zero() {
                    self.flush_text();
                } else if self.flush_at.is_none() {
                    self.flush_at = Some(Instant::now() + self.cfg.coalesce);
                }
            }
            AgentEvent::TextEnd => self.close_text(),
            AgentEvent::ToolUse {
                message_id,
                id,
                name,
                input,
            } => {
                self.close_text();
                self.record(ServerMsg::ToolStart {
                    message_id,
                    tool_use_id: id,
                    tool: name,
                    input,
                    session_id: sid,
                });
            }
            AgentEvent::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                let truncated = content.chars().count() > MAX_TOOL_RESULT_CHARS;
                let result = if truncated {
                    content.chars().take(MAX_TOOL_RESULT_CHARS).collect()
                } else {
                    content
                };
                self.record(ServerMsg::ToolResult {
                    tool_use_id,
                    result,
                    is_error: is_error.then_some(true),
                    truncated: truncated.then_some(true),
                    session_id: sid,
                });
            }
            AgentEvent::TurnResult(result) => self.on_result(result).await,
            AgentEvent::ControlRequest {
                request_id,
                subtype,
                request,
            } => self.on_control_request(request_id, &subtype, request).await,
            AgentEvent::ControlCancel { request_id } => {
                // The CLI withdrew the question (turn aborted): no answer may follow.
                if let Some(prompt) = self.prompts.take_by_cli_request(&request_id) {
                    self.announce_expired(prompt.id, "Claude Code withdrew this request.");
                }
            }
            AgentEvent::ControlResponse {
                request_id,
                outcome,
            } => self.on_control_response(&request_id, outcome),
        }
    }

    fn on_control_response(&mut self, request_id: &str, outcome: Result<Value, String>) {
        let Some(pending) = self.pending.remove(request_id) else {
            return;
        };
        match (pending, outcome) {
            (Pending::Initialize, Ok(initialized)) => {
                self.agent_ready = true;
                self.slash_commands = agent::slash_commands(&initialized);
                self.publish(
                    Audience::Active(&self.rec.session_id),
                    &ServerMsg::ClaudeReady {
                        session_id: self.rec.session_id.clone(),
                        slash_commands: self.slash_commands.clone(),
                    },
                );
            }
            (Pending::SetModel(model), Ok(_)) => self.model_applied(model),
            (Pending::SetMode(mode), Ok(_)) => self.mode_applied(mode),
            (Pending::Interrupt, Ok(_)) => {}
            (what, Err(error)) => {
                tracing::warn!(?what, %error, "the agent refused a control request");
                self.session_error(
                    None,
                    format!("Claude Code refused the request ({what:?}): {error}"),
                );
            }
        }
    }

    async fn on_result(&mut self, result: TurnResult) {
        self.close_text();
        // The CLI only asks during a turn; whatever still waits now is moot (the CLI
        // withdraws such requests itself; this covers one that did not).
        self.forget_prompts("The turn ended before this was answered.");
        let sid = self.rec.session_id.clone();
        if self.resuming
            && result.is_error
            && result
                .errors
                .iter()
                .any(|e| e.contains("No conversation found"))
        {
            // The CLI lost the conversation we saved (its own files were removed). Start a
            // fresh one and say so, instead of retrying a resume that can never work.
            self.resuming = false;
            self.rec.agent_session_id = None;
            if let Some(agent) = self.agent.take() {
                drop(agent); // exits on its own; its Exited is ignored (old generation)
            }
            self.notice(
                MessageType::System,
                "The earlier Claude Code conversation could not be resumed; starting a new one.",
            );
            self.save();
            if let Some(turn) = self.current_input.take() {
                match self.ensure_agent().await {
                    Ok(()) => {
                        if let Some(agent) = &self.agent {
                            let _ = agent.send_user(&turn.text, &turn.blocks).await;
                        }
                        self.current_input = Some(turn);
                        return;
                    }
                    Err(refusal) => self.session_error(Some(refusal.code), refusal.message),
                }
            }
        }
        if result.is_error {
            if self.interrupted {
                self.notice(MessageType::System, "Interrupted.");
            } else {
                let detail = if result.errors.is_empty() {
                    result.subtype.clone()
                } else {
                    result.errors.join("; ")
                };
                let text = match &result.text {
                    Some(t) if !t.is_empty() => format!("The turn failed: {t} ({detail})"),
                    _ => format!("The turn failed: {detail}"),
                };
                self.notice(MessageType::Error, text);
            }
        }
        // The CLI reports what its process has cost so far; the phone is told the turn's.
        let cost = result.cost.map(|total| {
            let before = match self.cost_so_far {
                Some((generation, before)) if generation == self.generation => before,
                _ => 0.0,
            };
            self.cost_so_far = Some((self.generation, total));
            (total - before).max(0.0)
        });
        // A long turn nobody watched is news; one a person interrupted is not.
        if !self.interrupted {
            let done = Notice::about(NoticeKind::TurnDone, &sid, &self.rec.name);
            let took = std::time::Duration::from_millis(result.duration_ms.unwrap_or(0));
            let looking = self.clients.looking_at(&sid);
            self.cfg.push.alerts.turn_done(done, took, looking);
        }
        let result = self.remember(ServerMsg::Result {
            cost,
            duration: result.duration_ms,
            usage: result.usage,
            session_id: self.rec.session_id.clone(),
            queue_length: Some(self.queue.len()),
        });
        // A successor must know the turn is over before any phone does: one that took
        // the CLI over believing it busy would wait for a result the CLI already gave,
        // and replay a conversation without it. The note is a packet away, the disk an
        // fsync or two; the turn waits for the disk only when the note cannot carry it.
        let input = self.turn_over();
        self.ended = input
            .and_then(|turn| self.since(&turn.entry))
            .unwrap_or_default();
        let noted = match self.sync_note() {
            Some(sent) if !self.ended.is_empty() => sent.await.unwrap_or(false),
            _ => false,
        };
        if !noted {
            self.persist().await;
        }
        self.publish(Audience::Active(&sid), &result);
        // The phones' connections write the result before this task goes on with its
        // bookkeeping (the spend, the disk): the last connection woken from here waits
        // in this thread's next-task slot, which no other thread may take, until this
        // task yields.
        tokio::task::yield_now().await;
        // Every phone keeps the day's total, whichever session it looks at. It follows
        // the result: counting it takes the spend file's lock and a blocking thread (a
        // few hundred µs), which the result need not wait for (a phone shows the turn's
        // cost added to the total it had, and takes this one as it comes).
        let mut spent = None;
        if let Some(cost) = cost {
            // A locked, fsynced file: not on the runtime's threads; the phones have the
            // total once it is counted, and the write goes on without them; `agent_idle`
            // waits for it (a worker killed once a phone saw the turn settled must not
            // forget its cost). A write that fails is logged; the next turn counts from
            // what the file has.
            let spend = self.cfg.spend.clone();
            let day = super::spend::local_day();
            let (counted, total) = oneshot::channel();
            let (written, on_disk) = oneshot::channel::<()>();
            tokio::task::spawn_blocking(move || {
                let tell = |today: &super::spend::Today| {
                    let _ = counted.send(today.clone());
                };
                if let Err(err) = spend.add(&day, cost, tell) {
                    tracing::warn!(%err, "cannot keep the day's spend");
                }
                let _ = written.send(());
            });
            if let Ok(today) = total.await {
                self.publish(Audience::All, &today.message());
            }
            spent = Some(on_disk);
        }
        if noted {
            self.persist().await;
        }
        if let Some(on_disk) = spent {
            if tokio::time::timeout(PERSIST_WAIT, on_disk).await.is_err() {
                tracing::warn!("the day's spend not on disk after {PERSIST_WAIT:?}; going on");
            }
        }
        self.told_idle(&sid);
        self.next_from_queue().await;
    }

    /// The turn is over: no longer busy or interrupted, and its input done with.
    fn turn_over(&mut self) -> Option<UserTurn> {
        self.busy = false;
        self.interrupt_deadline = None;
        self.interrupted = false;
        self.went_idle();
        self.rec.last_activity_at = now_ms();
        self.current_input.take()
    }

    /// The history from `input` on (it included), if it is still there and small enough
    /// for a note ([`NOTED_TURN_MAX`]).
    fn since(&self, input: &Arc<ServerMsg>) -> Option<Vec<Arc<ServerMsg>>> {
        let at = self
            .rec
            .history
            .iter()
            .rposition(|m| Arc::ptr_eq(m, input))?;
        let turn = self.rec.history.range(at..);
        let size: usize = turn.clone().map(|m| approx_size(m)).sum();
        (size <= NOTED_TURN_MAX).then(|| turn.cloned().collect())
    }

    /// A turn ended without a result (its CLI is gone).
    async fn end_turn(&mut self, sid: &str) {
        self.turn_over();
        // The supervisor first: a successor that takes the CLI over must not wait for a
        // result it will never see.
        self.sync_note();
        // On disk before the phones hear the turn is over.
        self.persist().await;
        self.told_idle(sid);
    }

    fn told_idle(&self, sid: &str) {
        self.publish(
            Audience::All,
            &ServerMsg::AgentIdle {
                session_id: sid.to_owned(),
            },
        );
    }

    /// The agent ignored `interrupt`: stop it, end the turn, and let the next input
    /// start a fresh process that resumes the conversation.
    async fn agent_unresponsive(&mut self) {
        self.interrupt_deadline = None;
        if !self.busy {
            return;
        }
        let grace = self.cfg.interrupt_grace;
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "agent ignored interrupt; stopping it"
        );
        if let Some(agent) = self.agent.take() {
            agent.shutdown().await;
        }
        self.on_exit(format!(
            "did not stop within {:.1} s of the interrupt",
            grace.as_secs_f64()
        ))
        .await;
    }

    async fn on_exit(&mut self, status: String) {
        self.agent = None;
        // Nobody is left to answer to; the phones must stop showing these prompts.
        self.forget_prompts("Claude Code stopped before this was answered.");
        self.agent_ready = false;
        self.pending.clear();
        self.close_text();
        let sid = self.rec.session_id.clone();
        tracing::warn!(%status, busy = self.busy, "agent exited unexpectedly");
        self.session_error(
            None,
            format!("Claude Code stopped unexpectedly ({status}). Your next message restarts it and resumes the conversation."),
        );
        if self.busy {
            self.end_turn(&sid).await;
        }
        self.next_from_queue().await;
    }

    // ---- text coalescing --------------------------------------------------------

    /// Sends the text gathered since the last flush as one delta.
    fn flush_text(&mut self) {
        self.flush_at = None;
        if self.coalesced.is_empty() {
            return;
        }
        let delta = std::mem::take(&mut self.coalesced);
        if let Some((message_id, _)) = &self.open_text {
            let msg = ServerMsg::StreamDelta {
                message_id: message_id.clone(),
                delta,
                session_id: self.rec.session_id.clone(),
            };
            self.publish(Audience::Active(&self.rec.session_id), &msg);
        }
    }

    /// Ends the open text block: last delta, `stream_end`, and the whole text into history.
    fn close_text(&mut self) {
        self.flush_text();
        if let Some((message_id, mut text)) = self.open_text.take() {
            text.shrink_to_fit();
            let sid = self.rec.session_id.clone();
            self.publish(
                Audience::Active(&sid),
                &ServerMsg::StreamEnd {
                    message_id,
                    session_id: sid.clone(),
                },
            );
            self.remember(ServerMsg::Message {
                message_type: MessageType::Assistant,
                content: text,
                timestamp: now_ms(),
                session_id: sid,
                client_message_id: None,
                attachments: Vec::new(),
            });
        }
    }
}

/// What changes a note ([`Session::sync_note`]), cheap to compare after every event.
#[derive(Debug, PartialEq)]
struct NoteKey {
    busy: bool,
    /// Which turn (its input travels with the note).
    turn: u64,
    asks: Vec<String>,
    commands: usize,
    cost: Option<u64>,
    /// Entries of the ended turn (they change only with `busy`).
    ended: usize,
}

/// Roughly what a history entry costs in memory and on disk.
fn approx_size(msg: &ServerMsg) -> usize {
    const OVERHEAD: usize = 128;
    OVERHEAD
        + match msg {
            ServerMsg::Message { content, .. } => content.len(),
            ServerMsg::ToolResult { result, .. } => result.len(),
            ServerMsg::ToolStart { input, .. } => input.to_string().len(),
            _ => 0,
        }
}

fn info_of(rec: &SessionRecord, busy: bool) -> SessionInfo {
    SessionInfo {
        session_id: rec.session_id.clone(),
        name: rec.name.clone(),
        cwd: rec.cwd.display().to_string(),
        model: rec.model.clone(),
        permission_mode: rec.permission_mode,
        is_busy: busy,
        created_at: rec.created_at,
        last_activity_at: rec.last_activity_at,
    }
}
