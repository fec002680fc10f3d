//! The chat's state and its update function: `App::update(Msg) -> Vec<Effect>`. No drawing,
//! no IO beyond reading file metadata, no channels: the runner (or a test) carries out the
//! effects and feeds their results back as messages. Keys are in `keys.rs`, slash commands and
//! sending in `actions.rs`, engine events and loaded images in `events.rs`; this file holds the
//! state and dispatches messages.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::chat::session::{is_dated_name, Session, Store};
use crate::protocol::{
    GenerationStats, ImageRef, LoadStage, ModelInfo, ModelSpec, PromptStats, RequestId,
    SamplingOverrides, SamplingParams,
};

use super::editor::Editor;
use super::image::ImageMeta;
use super::msg::{Effect, Exit, Msg};
use super::theme::Theme;
use super::transcript::Cache;

/// How long a first Ctrl+C (with no answer to stop) waits for the second that quits.
pub const QUIT_WINDOW: Duration = Duration::from_secs(2);

/// How the chat starts.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The model to load first (its `source`), with device, dtype and hub options that
    /// `/model` keeps.
    pub spec: ModelSpec,
    /// The user's sampling settings (config.toml under flags); `/set` changes them. The
    /// engine applies them over the loaded model's defaults.
    pub sampling: SamplingOverrides,
    pub theme: Theme,
    /// Where `/save` and `/load` keep sessions (only listed here, for Tab completion).
    pub sessions: Store,
    /// `--image` paths, attached to the first message.
    pub images: Vec<PathBuf>,
    /// The conversation to continue (`--session`, `--continue`); a new one when `None`.
    pub session: Option<Session>,
}

/// A model being loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Loading {
    pub id: RequestId,
    pub source: String,
    /// The latest progress: stage, done, total.
    pub progress: Option<(LoadStage, u64, u64)>,
}

/// The answer being generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    pub id: RequestId,
    /// Its turn in the session.
    pub turn: usize,
    /// The engine accepted the prompt (`Started`).
    pub started: bool,
    pub tokens: usize,
}

/// A line in the transcript that is not part of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Shown after this many turns.
    pub after_turns: usize,
    pub error: bool,
    pub text: String,
}

/// What is known about an attached image.
#[derive(Debug)]
pub enum ImageState {
    Loading,
    Ready(ImageMeta),
    Failed(String),
}

/// Sizes the renderer measured, which scrolling needs.
#[derive(Debug, Default)]
pub struct ViewMetrics {
    /// Rows of the whole transcript at the current width.
    pub content_rows: Cell<usize>,
    /// Rows of the transcript area.
    pub viewport_rows: Cell<usize>,
    /// The largest scroll offset of the help overlay.
    pub help_max: Cell<usize>,
    /// The screen's size in cells at the last frame (the viewer fills it).
    pub screen: Cell<(u16, u16)>,
}

/// Tab completion in progress: further Tabs cycle through the candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TabCycle {
    /// Byte offset where the completed word starts.
    pub from: usize,
    pub candidates: Vec<String>,
    pub next: usize,
}

/// The whole state of the chat screen.
#[derive(Debug)]
pub struct App {
    pub theme: Theme,
    pub session: Session,
    pub notices: Vec<Notice>,
    /// Images attached to the next message.
    pub pending: Vec<ImageRef>,
    pub images: HashMap<PathBuf, ImageState>,
    pub editor: Editor,
    pub spec: ModelSpec,
    pub model: Option<ModelInfo>,
    pub loading: Option<Loading>,
    pub sampling: SamplingOverrides,
    pub generation: Option<Generation>,
    /// A stopped generation whose `Finished` is still to come: (id, turn).
    pub cancelled: Option<(RequestId, usize)>,
    /// The prompt of the latest request.
    pub prompt: Option<PromptStats>,
    /// The costs of the latest finished answer.
    pub stats: Option<GenerationStats>,
    /// The top row shown, or `None` to follow the bottom.
    pub scroll: Option<usize>,
    /// The help overlay is open, scrolled this far.
    pub help: Option<usize>,
    /// Ctrl+C was pressed once (at this time): another within [`QUIT_WINDOW`] quits.
    pub quit_armed: Option<Instant>,
    /// The session's name was made from the date (the first automatic save): `/save NAME`
    /// renames it rather than making a copy.
    pub auto_named: bool,
    /// A seed `/regen` drew for the next request.
    pub(crate) drawn_seed: Option<u64>,
    /// The seed `/regen` drew for the latest answer, shown in the status line.
    pub shown_seed: Option<u64>,
    /// Which conversation this is: changes with `/clear` and `/load`, so that a save of the
    /// previous one reporting back does not rename this one.
    pub(crate) conversation: u64,
    pub tab: Option<TabCycle>,
    pub spinner: usize,
    pub sessions: Store,
    pub view: ViewMetrics,
    pub(crate) cache: RefCell<Cache>,
    /// The last slash command line, given back if its file work fails.
    pub(crate) last_command: Option<String>,
    /// `/compare`: the last question answered by two models, in progress or done.
    pub compare: Option<super::compare::Compare>,
    /// Mouse reports are on: the wheel scrolls; off (F2): the terminal selects text.
    pub mouse: bool,
    /// `/view`: an image on the whole screen.
    pub viewer: Option<super::viewer::Viewer>,
    next_id: RequestId,
    exit: Option<Exit>,
}

impl App {
    /// A chat with nothing loaded yet; [`App::start`] gives the first effects.
    pub fn new(config: AppConfig) -> Self {
        let auto_named = (config.session.as_ref()).is_some_and(|s| is_dated_name(&s.name));
        let pending = config
            .images
            .iter()
            .map(|p| ImageRef {
                path: p.clone(),
                ..ImageRef::default()
            })
            .collect();
        Self {
            theme: config.theme,
            session: config.session.unwrap_or_else(|| Session::new("")),
            notices: Vec::new(),
            pending,
            images: HashMap::new(),
            editor: Editor::default(),
            spec: config.spec,
            model: None,
            loading: None,
            sampling: config.sampling,
            generation: None,
            cancelled: None,
            prompt: None,
            stats: None,
            scroll: None,
            help: None,
            quit_armed: None,
            auto_named,
            conversation: 0,
            drawn_seed: None,
            shown_seed: None,
            tab: None,
            spinner: 0,
            sessions: config.sessions,
            view: ViewMetrics::default(),
            cache: RefCell::new(Cache::default()),
            last_command: None,
            compare: None,
            mouse: true,
            viewer: None,
            next_id: 1,
            exit: None,
        }
    }

    /// Loads the first model and reads the `--image` attachments.
    pub fn start(&mut self) -> Vec<Effect> {
        let mut effects = vec![self.load_model(self.spec.source.clone())];
        if !self.session.turns.is_empty() {
            let turns = self.session.turns.len();
            self.notice(format!(
                "Continuing session {} ({turns} turn{})",
                self.session.name,
                if turns == 1 { "" } else { "s" }
            ));
        }
        let paths: Vec<PathBuf> = (self.session.turns.iter())
            .flat_map(|t| t.images.iter().map(|a| a.path.clone()))
            .chain(self.pending.iter().map(|a| a.path.clone()))
            .collect();
        for path in paths {
            effects.extend(self.read_image(path));
        }
        effects
    }

    /// Set when the chat should end.
    pub fn exit(&self) -> Option<Exit> {
        self.exit
    }

    pub(crate) fn set_exit(&mut self, exit: Exit) {
        self.exit = Some(exit);
    }

    /// A model is loading or an answer is being generated (the UI animates).
    pub fn busy(&self) -> bool {
        self.generation.is_some()
            || self.loading.is_some()
            || self.compare.as_ref().is_some_and(|c| c.running())
    }

    pub(crate) fn next_id(&mut self) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds a line to the transcript after the current turns.
    pub fn notice(&mut self, text: impl Into<String>) {
        self.push_notice(false, text.into());
    }

    /// Adds an error line to the transcript after the current turns.
    pub fn error(&mut self, text: impl Into<String>) {
        self.push_notice(true, text.into());
    }

    /// Reports a failed command and gives its line back to fix, if nothing was typed since.
    fn command_failed(&mut self, text: String) {
        self.error(text);
        if let Some(line) = self.last_command.take() {
            if self.editor.is_empty() {
                // Only the refused command, selected: typing replaces it, an arrow edits it.
                self.editor.set_selected(&line);
            }
        }
    }

    fn push_notice(&mut self, error: bool, text: String) {
        self.notices.push(Notice {
            after_turns: self.session.turns.len(),
            error,
            text,
        });
        self.scroll = None;
    }

    /// Starts loading `source` with the chat's device, dtype and hub options.
    pub(crate) fn load_model(&mut self, source: String) -> Effect {
        let id = self.next_id();
        let spec = ModelSpec {
            source: source.clone(),
            ..self.spec.clone()
        };
        self.spec = spec.clone();
        // The last answer's counts and speed were the old model's: another tokenizer counts
        // the conversation differently, another model runs at another speed.
        self.prompt = None;
        self.stats = None;
        self.loading = Some(Loading {
            id,
            source,
            progress: None,
        });
        Effect::Engine(crate::protocol::Command::Load { id, spec })
    }

    /// Esc while a model downloads or loads: the engine stops it (a download keeps what
    /// arrived, to resume later) and the model loaded before stays.
    pub(crate) fn cancel_load(&mut self) -> Vec<Effect> {
        let Some(loading) = self.loading.take() else {
            return Vec::new();
        };
        self.notice(format!(
            "Stopped loading {}",
            short_model_name(&loading.source)
        ));
        if let Some(info) = &self.model {
            self.spec.source = info.source.clone();
        }
        vec![Effect::Cancel(loading.id)]
    }

    /// Asks for an image's metadata and thumbnail unless it is known or on its way.
    pub(crate) fn read_image(&mut self, path: PathBuf) -> Option<Effect> {
        if self.images.contains_key(&path) {
            return None;
        }
        self.images.insert(path.clone(), ImageState::Loading);
        Some(Effect::LoadImage(path))
    }

    /// Handles one message.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Key(key) => self.on_key(key),
            Msg::Paste(text) => self.on_paste(&text),
            Msg::Mouse(mouse) => {
                self.on_mouse(mouse);
                Vec::new()
            }
            Msg::Resize => Vec::new(),
            Msg::Tick => {
                self.spinner = self.spinner.wrapping_add(1);
                if self.quit_armed.is_some_and(|t| t.elapsed() > QUIT_WINDOW) {
                    self.quit_armed = None;
                }
                Vec::new()
            }
            Msg::Engine(event) => self.on_engine(event),
            Msg::Viewed { job, result } => {
                self.on_viewed(job, result);
                Vec::new()
            }
            Msg::Image { path, result } => {
                self.on_image(path, result);
                Vec::new()
            }
            Msg::Saved {
                result,
                announce,
                conversation,
            } => {
                match result {
                    Ok(_) if conversation != self.conversation => {}
                    Ok((name, path)) => {
                        if announce {
                            self.notice(format!("Saved session {name} ({})", path.display()));
                            self.auto_named = false;
                        } else if self.session.name.is_empty() {
                            self.auto_named = true;
                        }
                        self.session.name = name;
                    }
                    Err(e) if announce => self.command_failed(format!("Cannot save: {e}")),
                    Err(e) => self.error(format!("Cannot save the conversation: {e}")),
                }
                Vec::new()
            }
            Msg::SessionList(result) => {
                match result {
                    Ok(lines) if lines.is_empty() => self.notice("No saved conversations yet"),
                    Ok(lines) => {
                        for line in lines {
                            self.notice(line);
                        }
                    }
                    Err(e) => self.error(format!("Cannot list sessions: {e}")),
                }
                Vec::new()
            }
            Msg::SessionLoaded(result) => match result {
                Ok(session) => self.replace_session(session),
                Err(e) => {
                    self.command_failed(format!("Cannot load: {e}"));
                    Vec::new()
                }
            },
            Msg::Exported(result) => {
                match result {
                    Ok(path) => self.notice(format!("Exported to {}", path.display())),
                    Err(e) => self.command_failed(format!("Cannot export: {e}")),
                }
                Vec::new()
            }
            Msg::Copied(result) => {
                match result {
                    Ok(done) => self.notice(done),
                    Err(e) => self.error(format!("Cannot copy: {e}")),
                }
                Vec::new()
            }
            Msg::Edited(result) => {
                match result {
                    Ok(text) => self.editor.set(text.trim_end_matches(['\n', '\r'])),
                    Err(e) => self.error(format!("Editor: {e}")),
                }
                Vec::new()
            }
        }
    }

    /// Saves the conversation as it is now (after every turn, and on exit), under its name or,
    /// the first time, a dated one. An empty conversation is not saved.
    pub(crate) fn autosave(&self) -> Vec<Effect> {
        if self.session.turns.is_empty() {
            return Vec::new();
        }
        vec![Effect::Save {
            name: (!self.session.name.is_empty()).then(|| self.session.name.clone()),
            session: Box::new(self.session.clone()),
            overwrite: true,
            announce: false,
            replaces: None,
            conversation: self.conversation,
        }]
    }

    /// The chat is ending: an answer in progress is kept as interrupted, and the conversation
    /// is saved.
    pub fn on_exit(&mut self) -> Vec<Effect> {
        let mut effects = self.stop_generation();
        effects.extend(self.autosave());
        effects
    }

    /// The sampling settings the next answer gets: the loaded model's defaults (the
    /// reference's before one is loaded) with the user's settings over them.
    pub fn params(&self) -> SamplingParams {
        let defaults = self
            .model
            .as_ref()
            .map(|m| m.defaults.clone())
            .unwrap_or_default();
        defaults.with(&self.sampling)
    }

    /// Stops the answer being generated, keeping its partial text (marked interrupted).
    pub(crate) fn stop_generation(&mut self) -> Vec<Effect> {
        let Some(g) = self.generation.take() else {
            return Vec::new();
        };
        if let Some(turn) = self.session.turns.get_mut(g.turn) {
            turn.interrupted = true;
        }
        self.cancelled = Some((g.id, g.turn));
        vec![Effect::Cancel(g.id)]
    }

    /// Scrolls the transcript by `delta` rows (negative is up).
    pub fn scroll_by(&mut self, delta: isize) {
        let max_top = self.max_top();
        let current = self.scroll.unwrap_or(max_top).min(max_top);
        let top = current.saturating_add_signed(delta).min(max_top);
        self.scroll = (top < max_top).then_some(top);
    }

    /// The largest useful top row.
    pub fn max_top(&self) -> usize {
        self.view
            .content_rows
            .get()
            .saturating_sub(self.view.viewport_rows.get())
    }

    /// The top row to draw.
    pub fn top_row(&self) -> usize {
        let max_top = self.max_top();
        self.scroll.map_or(max_top, |t| t.min(max_top))
    }

    /// The display name of the model that answers next.
    pub fn model_name(&self) -> String {
        match (&self.loading, &self.model) {
            (_, Some(info)) => short_model_name(&info.source),
            (Some(l), None) => short_model_name(&l.source),
            (None, None) => short_model_name(&self.spec.source),
        }
    }
}

/// A short name for a model source: the last part of a path or repo id.
pub fn short_model_name(source: &str) -> String {
    let trimmed = source.trim_end_matches('/');
    trimmed
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(trimmed)
        .to_string()
}

/// A path's file name for labels.
pub fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_model_name("7b"), "7b");
        assert_eq!(short_model_name("/tmp/tiny-qwen2/"), "tiny-qwen2");
        assert_eq!(
            short_model_name("FreedomIntelligence/HuatuoGPT-Vision-7B"),
            "HuatuoGPT-Vision-7B"
        );
    }
}
