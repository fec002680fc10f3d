//! What the App does with the results of asynchronous work: engine events (load progress,
//! tokens, finished and failed requests — stale request ids are dropped), image reads and
//! loaded sessions. A failed send takes its turn back and returns the text and images to the
//! editor, so nothing typed is lost.

use std::path::PathBuf;

use crate::chat::session::{is_dated_name, Session};
use crate::protocol::{Completion, Event, FailureKind, RequestId, Stop};

use super::app::{file_name, short_model_name, App, ImageState};
use super::image::ImageMeta;
use super::msg::Effect;

impl App {
    /// An attachment's image was read: keep its size, hash and thumbnail; an unreadable
    /// image is taken off the next message with an error.
    pub(crate) fn on_image(&mut self, path: PathBuf, result: Result<ImageMeta, String>) {
        match result {
            Ok(meta) => {
                for a in self.pending.iter_mut().filter(|a| a.path == path) {
                    a.sha256 = Some(meta.sha256.clone());
                }
                for warning in &meta.warnings {
                    self.notice(format!("{}: {warning}", file_name(&path)));
                }
                self.images.insert(path, ImageState::Ready(meta));
            }
            Err(e) => {
                let name = file_name(&path);
                if self.pending.iter().any(|a| a.path == path) {
                    self.pending.retain(|a| a.path != path);
                    self.error(format!(
                        "Cannot read image {name}: {e}; it was not attached"
                    ));
                }
                self.images.insert(path, ImageState::Failed(e));
            }
        }
    }

    /// Handles an engine event; events of requests the chat no longer waits for are dropped.
    pub(crate) fn on_engine(&mut self, event: Event) -> Vec<Effect> {
        if let Some(effects) = self.on_compare_event(&event) {
            return effects;
        }
        match event {
            Event::LoadProgress {
                id,
                stage,
                done,
                total,
            } => {
                if let Some(l) = self.loading.as_mut().filter(|l| l.id == id) {
                    l.progress = Some((stage, done, total));
                }
            }
            Event::Loaded { id, info } => {
                if self.loading.as_ref().is_some_and(|l| l.id == id) {
                    self.loading = None;
                    self.notice(format!(
                        "Model ready: {} ({})",
                        short_model_name(&info.source),
                        match info.engine.endpoint {
                            Some(_) => info.describe(),
                            None => format!("{}, {}, {}", info.family, info.dtype, info.device),
                        }
                    ));
                    self.model = Some(info);
                }
            }
            Event::Unloaded => self.model = None,
            // A swap failed and the model loaded before is (still) there.
            Event::Restored { info, .. } => {
                self.notice(format!(
                    "{} is still loaded",
                    short_model_name(&info.source)
                ));
                self.spec.source = info.source.clone();
                self.model = Some(info);
            }
            Event::Started { id, prompt, params } => {
                if let Some(g) = self.generation.as_mut().filter(|g| g.id == id) {
                    g.started = true;
                    self.prompt = Some(prompt);
                    if let Some(turn) = self.session.turns.get_mut(g.turn) {
                        turn.started(&params);
                    }
                }
            }
            Event::Token { id, text } => {
                if let Some(g) = self.generation.as_mut().filter(|g| g.id == id) {
                    g.tokens += 1;
                    if let Some(turn) = self.session.turns.get_mut(g.turn) {
                        turn.answer.push_str(&text);
                    }
                }
            }
            Event::Finished { id, completion } => {
                if self.on_finished(id, completion) {
                    return self.autosave();
                }
            }
            Event::Failed {
                id,
                kind,
                error,
                partial,
            } => {
                if self.on_failed(id, kind, error, partial) {
                    return self.autosave();
                }
            }
        }
        Vec::new()
    }

    /// An answer ended (or a stopped one confirmed its end): keep the unstripped answer for
    /// the history, the settings it was made with, and the costs for the status line.
    /// Returns whether the conversation changed (and so is saved).
    fn on_finished(&mut self, id: RequestId, completion: Completion) -> bool {
        let turn_index = match (self.generation, self.cancelled) {
            (Some(g), _) if g.id == id => {
                self.generation = None;
                g.turn
            }
            (_, Some((cid, turn))) if cid == id => {
                self.cancelled = None;
                turn
            }
            _ => return false,
        };
        self.prompt = Some(completion.stats.prompt);
        self.stats = Some(completion.stats.clone());
        if turn_index < self.session.turns.len() {
            let (earlier, rest) = self.session.turns.split_at_mut(turn_index);
            rest[0].finish(&completion, self.model.as_ref(), earlier);
        }
        let s = &completion.stats;
        let (used, window) = (s.prompt.total + s.generated_tokens, s.prompt.context_length);
        if completion.stop == Stop::Context {
            self.error(format!(
                "Context full: the answer stopped at the {window}-position window; /drop N removes the oldest turns, /clear starts a new conversation"
            ));
        } else if window > 0 && used * 5 >= window * 4 {
            self.notice(format!(
                "The conversation fills {}% of the context window ({used}/{window}); /drop N removes the oldest turns, /clear starts a new conversation",
                used * 100 / window
            ));
        }
        true
    }

    /// A request failed: a load leaves no model; an answer keeps its partial text, or, with
    /// none, gives the message back to the editor. Returns whether the conversation kept a
    /// (partial) answer, and so is saved.
    fn on_failed(
        &mut self,
        id: RequestId,
        kind: FailureKind,
        error: String,
        partial: String,
    ) -> bool {
        if self.loading.as_ref().is_some_and(|l| l.id == id) {
            self.loading = None;
            self.model = None;
            self.error(error);
            return false;
        }
        if self.cancelled.is_some_and(|(cid, _)| cid == id) {
            self.cancelled = None;
            return true;
        }
        let Some(g) = self.generation.filter(|g| g.id == id) else {
            return false;
        };
        self.generation = None;
        if !partial.is_empty() {
            if let Some(turn) = self.session.turns.get_mut(g.turn) {
                turn.cut_short(&partial);
            }
            self.error(error);
            return true;
        }
        // Nothing was answered: take the turn back and give the user their text and images.
        if g.turn + 1 == self.session.turns.len() {
            if let Some(turn) = self.session.turns.pop() {
                let mut images = turn.images;
                images.append(&mut self.pending);
                self.pending = images;
                if self.editor.is_empty() {
                    self.editor.set(&turn.text);
                } else {
                    self.editor.remember(&turn.text);
                }
            }
        }
        let what = match kind {
            FailureKind::BadInput => "Not sent",
            FailureKind::Model => "Model problem",
            FailureKind::Internal => "Failed",
        };
        self.error(format!(
            "{what}: {error} (your message is back in the editor)"
        ));
        false
    }

    /// Replaces the conversation with a loaded one, stopping any answer in progress.
    pub(crate) fn replace_session(&mut self, session: Session) -> Vec<Effect> {
        let mut effects = self.stop_generation();
        self.cancelled = None;
        self.notices.clear();
        self.cache.borrow_mut().clear();
        let images: Vec<PathBuf> = session
            .turns
            .iter()
            .flat_map(|t| t.images.iter().map(|a| a.path.clone()))
            .collect();
        let (name, turns) = (session.name.clone(), session.turns.len());
        self.auto_named = is_dated_name(&session.name);
        self.session = session;
        self.conversation += 1;
        self.scroll = None;
        // The status line spoke of the old conversation: its counts and speed go.
        self.prompt = None;
        self.stats = None;
        self.compare = None;
        self.notice(format!(
            "Loaded session {name} ({})",
            crate::text::count(turns, "turn", "turns")
        ));
        for path in images {
            effects.extend(self.read_image(path));
        }
        effects
    }
}
