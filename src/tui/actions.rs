//! What Enter does: send a message (building the engine's `GenerateRequest` from the session,
//! as `ask --session` does), attach image paths, or run a slash command. A line that fails
//! validation stays in the editor with an error in the transcript, so nothing typed is lost.

use std::path::PathBuf;

use crate::protocol::{Command, ImageRef, MAX_IMAGES_PER_TURN};
use crate::text::py_strip;

use super::app::{file_name, App, Generation, ImageState};
use super::commands::{self, Setting, Slash};
use super::msg::{Effect, Exit};
use super::paste;

impl App {
    /// Enter: sends the prompt, attaches the paths it names, or runs its command.
    pub(crate) fn submit(&mut self) -> Vec<Effect> {
        let text = self.editor.text().to_string();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            if !self.pending.is_empty() {
                self.error("Type a question to send with the attached images");
            }
            return Vec::new();
        }
        if let Some(paths) = paste::image_paths(trimmed) {
            self.editor.take();
            return self.attach(paths);
        }
        if trimmed.starts_with('/') && !trimmed.starts_with("//") {
            return match commands::parse(trimmed) {
                Ok(slash) => {
                    self.editor.take();
                    self.last_command = Some(text.clone());
                    let errors = self.error_count();
                    let effects = self.run_command(slash);
                    // A command that failed gives its line back, to fix and retry.
                    if self.error_count() > errors && self.editor.is_empty() {
                        self.editor.set_selected(&text);
                    }
                    effects
                }
                Err(e) => {
                    self.error(e);
                    // Only the refused command stays, selected: typing replaces it.
                    self.editor.set_selected(&text);
                    Vec::new()
                }
            };
        }
        if self.generation.is_some() {
            self.error("Wait for the answer to finish, or press Esc to stop it");
            return Vec::new();
        }
        if self.model.is_none() && self.loading.is_none() {
            self.error("No model is loaded: use /model PATH (a checkpoint directory), 7b or 34b");
            return Vec::new();
        }
        let text = self.editor.take();
        let text = match text.trim_start().strip_prefix("//") {
            Some(rest) => format!("/{rest}"),
            None => text,
        };
        let images = std::mem::take(&mut self.pending);
        self.send(text, images)
    }

    fn error_count(&self) -> usize {
        self.notices.iter().filter(|n| n.error).count()
    }

    /// Adds images to the next message, checking they exist and the per-turn limit.
    pub(crate) fn attach(&mut self, paths: Vec<PathBuf>) -> Vec<Effect> {
        self.attach_viewed(paths, None, None)
    }

    /// [`App::attach`] with a DICOM window and frame for these images. An image already
    /// attached gets the new window and frame (that is how one re-windows it).
    pub(crate) fn attach_viewed(
        &mut self,
        paths: Vec<PathBuf>,
        window: Option<String>,
        frame: Option<u32>,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        for path in paths {
            if path.is_dir() {
                self.error(format!(
                    "Cannot attach {}: it is a directory (give an image file in it)",
                    path.display()
                ));
                continue;
            }
            if !path.is_file() {
                self.error(format!("Cannot attach {}: no such file", path.display()));
                continue;
            }
            if self.pending.len() >= MAX_IMAGES_PER_TURN {
                self.error(format!(
                    "At most {MAX_IMAGES_PER_TURN} images per message: {} was not attached",
                    file_name(&path)
                ));
                continue;
            }
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            if let Some(attached) = self.pending.iter_mut().find(|a| a.path == path) {
                if window.is_some() || frame.is_some() {
                    attached.window = window.clone().or(attached.window.take());
                    attached.frame = frame.or(attached.frame);
                    let label = format!("{}: {}", file_name(&path), view_label(attached));
                    self.notice(label);
                } else {
                    self.notice(format!("{} is already attached", file_name(&path)));
                }
                continue;
            }
            let sha256 = match self.images.get(&path) {
                Some(ImageState::Ready(meta)) => Some(meta.sha256.clone()),
                _ => None,
            };
            self.pending.push(ImageRef {
                path: path.clone(),
                sha256,
                window: window.clone(),
                frame,
            });
            effects.extend(self.read_image(path));
        }
        effects
    }

    /// Starts answering `text` about `images`, after the session's turns. A turn that cannot
    /// be asked (an image changed or gone) gives the text and images back to the editor.
    pub(crate) fn send(&mut self, text: String, images: Vec<ImageRef>) -> Vec<Effect> {
        let drawn = std::mem::take(&mut self.drawn_seed);
        self.shown_seed = drawn;
        let model = self.model_source();
        let mut sampling = self.sampling.clone();
        if let Some(seed) = drawn {
            sampling.seed = Some(seed);
        }
        let (request, turn) = match self.session.next_turn(
            &text,
            images.clone(),
            &sampling,
            &model,
            &self.sessions.images(),
        ) {
            Ok(next) => next,
            Err(e) => {
                self.error(e.to_string());
                if self.editor.is_empty() && self.pending.is_empty() {
                    self.editor.set(&text);
                    self.pending = images;
                }
                return Vec::new();
            }
        };
        let id = self.next_id();
        self.session.turns.push(turn);
        self.generation = Some(Generation {
            id,
            turn: self.session.turns.len() - 1,
            started: false,
            tokens: 0,
        });
        self.scroll = None;
        vec![Effect::Engine(Command::Generate {
            id,
            request: Box::new(request),
        })]
    }

    /// The source of the model that will answer (loaded, loading or requested).
    fn model_source(&self) -> String {
        match (&self.loading, &self.model) {
            (Some(l), _) => l.source.clone(),
            (None, Some(info)) => info.source.clone(),
            (None, None) => self.spec.source.clone(),
        }
    }

    /// Runs a parsed slash command.
    pub(crate) fn run_command(&mut self, slash: Slash) -> Vec<Effect> {
        match slash {
            Slash::Image(arg) => match split_view_flags(&arg) {
                Ok((paths, window, frame)) => {
                    self.attach_viewed(paste::argument_paths(paths), window, frame)
                }
                Err(e) => {
                    self.error(e);
                    Vec::new()
                }
            },
            Slash::View(n) => self.open_viewer(n),
            Slash::Detach(n) => {
                let count = self.pending.len();
                let at = n.unwrap_or(count);
                if count == 0 {
                    self.error("No image is attached");
                } else if at == 0 || at > count {
                    self.error(format!(
                        "/detach {at}: there {} {count} attached {} (1 to {count})",
                        if count == 1 { "is" } else { "are" },
                        if count == 1 { "image" } else { "images" }
                    ));
                } else {
                    let image = self.pending.remove(at - 1);
                    self.notice(format!("Detached {}", file_name(&image.path)));
                }
                Vec::new()
            }
            Slash::Model(source) => {
                let source = if source.starts_with('~') {
                    paste::expand_home(&source).display().to_string()
                } else {
                    source
                };
                let mut effects = self.stop_generation();
                effects.push(self.load_model(source));
                effects
            }
            Slash::Compare(models) => self.start_compare(models),
            Slash::Clear => {
                let mut effects = self.stop_generation();
                self.compare = None;
                // The engine's cached images and KV cache belong to the old conversation.
                effects.push(Effect::Engine(Command::Reset));
                self.cancelled = None;
                // The old conversation was saved after its last turn; the next starts a new file.
                effects.extend(self.autosave());
                self.session = crate::chat::session::Session::new("");
                self.auto_named = false;
                self.conversation += 1;
                self.notices.clear();
                self.pending.clear();
                self.cache.borrow_mut().clear();
                self.prompt = None;
                self.stats = None;
                self.scroll = None;
                effects
            }
            Slash::Regen => self.regen(),
            Slash::Drop(n) => self.drop_turns(n),
            Slash::Set(None) => {
                let p = &self.params();
                self.notice(format!(
                    "temperature {} · top_k {} · top_p {} · repetition_penalty {} · max_new_tokens {} · seed {}",
                    p.temperature, p.top_k, p.top_p, p.repetition_penalty, p.max_new_tokens, p.seed
                ));
                Vec::new()
            }
            Slash::Set(Some(setting)) => {
                self.set(setting);
                Vec::new()
            }
            Slash::Save(name) => {
                let overwrite = match &name {
                    None => true,
                    Some(n) => *n == self.session.name,
                };
                // A dated name from an automatic save is renamed, not copied.
                let replaces = match &name {
                    Some(n) if self.auto_named && *n != self.session.name => {
                        Some(self.session.name.clone())
                    }
                    _ => None,
                };
                let name = name
                    .or_else(|| (!self.session.name.is_empty()).then(|| self.session.name.clone()));
                vec![Effect::Save {
                    name,
                    session: Box::new(self.session.clone()),
                    overwrite,
                    announce: true,
                    replaces,
                    conversation: self.conversation,
                }]
            }
            Slash::Sessions => vec![Effect::ListSessions],
            Slash::Load(name) => vec![Effect::LoadSession(name)],
            Slash::Export(path) => vec![Effect::Export {
                path,
                markdown: self.export_markdown(),
            }],
            Slash::Copy(what) => match self.copy_target(what) {
                Ok((text, what)) => vec![Effect::Copy { text, what }],
                Err(e) => {
                    self.error(e);
                    Vec::new()
                }
            },
            Slash::Help => {
                self.help = Some(0);
                Vec::new()
            }
            Slash::Quit => {
                self.set_exit(Exit::Quit);
                Vec::new()
            }
        }
    }

    /// `/drop N`: removes the N oldest turns from the conversation (explicitly and visibly:
    /// they leave the prompt, and the saved session), to make room in the context window.
    fn drop_turns(&mut self, n: usize) -> Vec<Effect> {
        if self.generation.is_some() {
            self.error("Wait for the answer to finish, or press Esc to stop it");
            return Vec::new();
        }
        let turns = self.session.turns.len();
        if n > turns {
            self.error(format!(
                "/drop {n}: the conversation has {turns} turn{}",
                if turns == 1 { "" } else { "s" }
            ));
            return Vec::new();
        }
        self.session.turns.drain(..n);
        self.cache.borrow_mut().clear();
        for notice in &mut self.notices {
            notice.after_turns = notice.after_turns.saturating_sub(n);
        }
        self.notice(format!(
            "Dropped the {n} oldest turn{} from the conversation: the model no longer sees {}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "it" } else { "them" }
        ));
        self.autosave()
    }

    /// `/regen`: asks the last question again (stopping its answer if it is still running).
    fn regen(&mut self) -> Vec<Effect> {
        let mut effects = self.stop_generation();
        self.cancelled = None;
        let Some(turn) = self.session.turns.pop() else {
            self.error("Nothing to regenerate yet");
            return effects;
        };
        let turns = self.session.turns.len();
        self.notices.retain(|n| n.after_turns <= turns);
        // The same seed would give the same answer: draw a new one, unless the user pinned
        // one (`/set seed N`, --seed, config.toml).
        if self.sampling.seed.is_none() {
            self.drawn_seed = Some(u64::from(rand::random::<u32>()));
        }
        let sent = self.send(turn.text.clone(), turn.images.clone());
        if self.generation.is_none() {
            // Could not be asked again: the answer stays.
            self.session.turns.push(turn);
        }
        effects.extend(sent);
        effects
    }

    /// `/set KEY VALUE`, checked by the sampling rules; an invalid value changes nothing.
    fn set(&mut self, setting: Setting) {
        let mut s = self.sampling.clone();
        let (key, value) = match setting {
            Setting::Temperature(v) => {
                s.temperature = Some(v);
                ("temperature", v.to_string())
            }
            Setting::TopK(v) => {
                s.top_k = Some(v);
                ("top_k", v.to_string())
            }
            Setting::TopP(v) => {
                s.top_p = Some(v);
                ("top_p", v.to_string())
            }
            Setting::RepetitionPenalty(v) => {
                s.repetition_penalty = Some(v);
                ("repetition_penalty", v.to_string())
            }
            Setting::MaxNewTokens(v) => {
                s.max_new_tokens = Some(v);
                ("max_new_tokens", v.to_string())
            }
            Setting::Seed(v) => {
                s.seed = Some(v);
                ("seed", v.to_string())
            }
        };
        match s.validate() {
            Ok(()) => {
                self.sampling = s;
                self.notice(format!("{key} = {value}"));
            }
            Err(e) => self.error(format!("/set: {e}")),
        }
    }

    /// The conversation as Markdown (images as references) with the generation settings.
    /// The text `/copy` copies and how to name it.
    fn copy_target(&self, what: super::commands::CopyWhat) -> Result<(String, String), String> {
        use super::commands::CopyWhat;
        let answers: Vec<&str> = self
            .session
            .turns
            .iter()
            .map(|t| py_strip(&t.answer))
            .collect();
        match what {
            CopyWhat::LastAnswer => answers
                .iter()
                .rev()
                .find(|a| !a.is_empty())
                .map(|a| (a.to_string(), "the last answer".to_string()))
                .ok_or_else(|| "No answer to copy yet".to_string()),
            CopyWhat::Answer(n) => match answers.get(n - 1) {
                Some(a) if !a.is_empty() => Ok((a.to_string(), format!("answer {n}"))),
                Some(_) => Err(format!("Answer {n} is empty")),
                None => Err(format!(
                    "/copy {n}: the conversation has {}",
                    crate::text::count(answers.len(), "answer", "answers")
                )),
            },
            CopyWhat::Code => answers
                .iter()
                .rev()
                .find_map(|a| last_code_block(a))
                .map(|c| (c, "the last code block".to_string()))
                .ok_or_else(|| "No code block in the answers".to_string()),
        }
    }

    pub fn export_markdown(&self) -> String {
        let mut session = self.session.clone();
        if session.name.is_empty() {
            session.name = "(unsaved)".into();
        }
        let mut md = session.to_markdown();
        let p = &self.params();
        md.push_str("## Generation settings\n\n");
        let model = match &self.model {
            Some(info) if info.engine.endpoint.is_some() => {
                format!("{} ({})", info.source, info.describe())
            }
            Some(info) => format!(
                "{} ({}, {}, {}, quantization {})",
                info.source, info.family, info.dtype, info.device, info.quantization
            ),
            None => self.spec.source.clone(),
        };
        md.push_str(&format!("- model: {model}\n"));
        md.push_str(&format!("- temperature: {}\n", p.temperature));
        md.push_str(&format!("- top_k: {}\n", p.top_k));
        md.push_str(&format!("- top_p: {}\n", p.top_p));
        md.push_str(&format!("- repetition_penalty: {}\n", p.repetition_penalty));
        md.push_str(&format!("- max_new_tokens: {}\n", p.max_new_tokens));
        md.push_str(&format!("- seed: {}\n", p.seed));
        if let Some(c) = &self.compare {
            md.push('\n');
            md.push_str(&super::compare::markdown(c));
        }
        md
    }
}

/// The body of the last fenced code block (``` or ~~~) of `text`.
fn last_code_block(text: &str) -> Option<String> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(fence) = ["```", "~~~"].iter().find(|f| trimmed.starts_with(**f)) {
                    open = Some((fence.to_string(), Vec::new()));
                }
            }
            Some((fence, body)) => {
                if trimmed.starts_with(fence.as_str()) {
                    blocks.push(body.join("\n"));
                    open = None;
                } else {
                    body.push(line);
                }
            }
        }
    }
    if let Some((_, body)) = open {
        blocks.push(body.join("\n"));
    }
    blocks.pop()
}

/// `/image` arguments: the paths, then optional `--window W` (`C,W` or a preset) and
/// `--frame N` for DICOM images.
fn split_view_flags(arg: &str) -> Result<(&str, Option<String>, Option<u32>), String> {
    let mut rest = arg.trim();
    let (mut window, mut frame) = (None, None);
    while let Some(at) = rest.rfind(" --") {
        let flag = &rest[at + 1..];
        let (name, value) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
        let value = value.trim();
        match name {
            "--window" => {
                value
                    .parse::<crate::dicom::Window>()
                    .map_err(|e| format!("/image --window {value:?}: {e}"))?;
                window = Some(value.to_string());
            }
            "--frame" => match value.parse::<u32>() {
                Ok(n) if n >= 1 => frame = Some(n),
                _ => {
                    return Err(format!(
                        "/image --frame {value:?}: give a frame number from 1"
                    ))
                }
            },
            _ => break,
        }
        rest = rest[..at].trim_end();
    }
    Ok((rest, window, frame))
}

/// `window lung · frame 3` of an image shown through a DICOM view (empty otherwise).
pub(crate) fn view_label(image: &ImageRef) -> String {
    let mut parts = Vec::new();
    if let Some(w) = &image.window {
        parts.push(format!("window {w}"));
    }
    if let Some(f) = image.frame {
        parts.push(format!("frame {f}"));
    }
    parts.join(" · ")
}
