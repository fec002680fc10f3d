//! `huatuo chat` without a terminal or a model: the App driven by messages with a fake engine
//! (state tests), rendered into ratatui's TestBackend (insta snapshots in tests/snapshots/),
//! and the UI loop typing while a slow fake engine streams (responsiveness).

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use huatuo::chat::session::Store;
use huatuo::protocol::{
    Command, Completion, Event, FailureKind, GenerationStats, LoadStage, ModelInfo, ModelSpec,
    PromptStats, RequestId, Stop,
};
use huatuo::protocol::{DType as ModelDType, DevicePref};
use huatuo::protocol::{SamplingOverrides, SamplingParams};
use huatuo::tui::theme::Theme;
use huatuo::tui::{dispatch, event_loop, image, ui, App, AppConfig, Exit, Host, Msg};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use ratatui_image::picker::Picker;

use crate::util::fixture;

/// Records what the App asked of the engine; reads images synchronously with halfblocks.
#[derive(Default)]
struct FakeHost {
    commands: Vec<Command>,
    cancelled: Vec<RequestId>,
    copied: Vec<String>,
    /// Mouse reports turned on (true) or off (false), in order.
    mouse: Vec<bool>,
    /// Replies (image reads) to feed back after the current message.
    replies: Vec<Msg>,
}

impl Host for FakeHost {
    fn engine(&mut self, command: Command) {
        self.commands.push(command);
    }
    fn cancel(&mut self, id: RequestId) {
        self.cancelled.push(id);
    }
    fn load_image(&mut self, path: PathBuf) {
        let result = image::load(&path, &Picker::halfblocks());
        self.replies.push(Msg::Image { path, result });
    }
    fn copy(&mut self, text: &str) -> Result<String, String> {
        self.copied.push(text.to_string());
        Ok("with a test clipboard".into())
    }
    fn edit(&mut self, text: &str) -> Result<String, String> {
        Ok(format!("{text} (edited)\n"))
    }
    fn redraw(&mut self) {}
    fn set_mouse(&mut self, on: bool) {
        self.mouse.push(on);
    }
    fn view_image(&mut self, job: huatuo::tui::image::ViewJob) {
        let result = image::view(&job, &Picker::halfblocks());
        self.replies.push(Msg::Viewed { job, result });
    }
}

/// A chat with a fake engine and a temporary sessions directory.
struct Chat {
    app: App,
    host: FakeHost,
    store: Store,
    _dir: tempfile::TempDir,
}

fn spec(source: &str) -> ModelSpec {
    ModelSpec {
        source: source.into(),
        revision: None,
        device: DevicePref::Cpu,
        dtype: ModelDType::Auto,
        offline: false,
        quant: None,
    }
}

fn info(source: &str, family: &str) -> ModelInfo {
    ModelInfo {
        source: source.into(),
        path: PathBuf::from(format!("/models/{source}")),
        repo: None,
        revision: None,
        family: family.into(),
        dtype: "f32".into(),
        device: "cpu".into(),
        quantization: "none".into(),
        context_length: 4096,
        tokens_per_image: 576,
        defaults: SamplingParams::default(),
        files: Vec::new(),
        quant_file: None,
        engine: Default::default(),
    }
}

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

impl Chat {
    /// Started, with the 7B loaded.
    fn new() -> Self {
        let mut chat = Self::unloaded();
        chat.respond_loaded("qwen2");
        chat
    }

    /// Started; the model's `Load` is still unanswered.
    fn unloaded() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::new(dir.path().join("sessions"));
        let config = AppConfig {
            spec: spec("7b"),
            sampling: SamplingOverrides::default(),
            session: None,
            theme: Theme::default(),
            sessions: store.clone(),
            images: Vec::new(),
        };
        let mut chat = Self {
            app: App::new(config),
            host: FakeHost::default(),
            store,
            _dir: dir,
        };
        let effects = chat.app.start();
        for effect in effects {
            if let Some(reply) = huatuo::tui::effects::execute(effect, &mut chat.host, &chat.store)
            {
                chat.send(reply);
            }
        }
        chat
    }

    fn send(&mut self, msg: Msg) {
        dispatch(&mut self.app, msg, &mut self.host, &self.store);
        while !self.host.replies.is_empty() {
            let replies = std::mem::take(&mut self.host.replies);
            for r in replies {
                dispatch(&mut self.app, r, &mut self.host, &self.store);
            }
        }
    }

    fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            self.send(key(KeyCode::Char(c)));
        }
    }

    /// Types `line` and presses Enter.
    fn enter(&mut self, line: &str) {
        self.type_text(line);
        self.send(key(KeyCode::Enter));
    }

    fn engine(&mut self, event: Event) {
        self.send(Msg::Engine(event));
    }

    /// The latest `Load` command's id and source.
    fn last_load(&self) -> (RequestId, String) {
        self.host
            .commands
            .iter()
            .rev()
            .find_map(|c| match c {
                Command::Load { id, spec } => Some((*id, spec.source.clone())),
                _ => None,
            })
            .expect("a Load command")
    }

    fn respond_loaded(&mut self, family: &str) {
        let (id, source) = self.last_load();
        self.engine(Event::Loaded {
            id,
            info: info(&source, family),
        });
    }

    /// The latest `Generate` command.
    fn last_generate(&self) -> (RequestId, huatuo::protocol::GenerateRequest) {
        self.host
            .commands
            .iter()
            .rev()
            .find_map(|c| match c {
                Command::Generate { id, request } => Some((*id, (**request).clone())),
                _ => None,
            })
            .expect("a Generate command")
    }

    fn generate_count(&self) -> usize {
        self.host
            .commands
            .iter()
            .filter(|c| matches!(c, Command::Generate { .. }))
            .count()
    }

    /// Answers the latest request: Started, the tokens, then Finished (unless `finish` is
    /// false).
    fn answer(&mut self, tokens: &[&str], finish: bool) {
        let (id, request) = self.last_generate();
        let prompt = PromptStats {
            text_tokens: 40 + 10 * request.history.len(),
            images: request.history_images.len() + request.images.len(),
            image_tokens: 576 * (request.history_images.len() + request.images.len()),
            total: 0,
            context_length: 4096,
        };
        let prompt = PromptStats {
            total: prompt.text_tokens + prompt.image_tokens,
            ..prompt
        };
        self.engine(Event::Started {
            id,
            prompt,
            params: SamplingParams::default().with(&request.sampling),
        });
        for t in tokens {
            self.engine(Event::Token {
                id,
                text: (*t).to_string(),
            });
        }
        if finish {
            let text: String = tokens.concat();
            self.engine(Event::Finished {
                id,
                completion: completion(&text, prompt),
            });
        }
    }

    fn render(&self, width: u16, height: u16) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
        terminal.draw(|f| ui::render(&self.app, f)).expect("draw");
        terminal
    }
}

fn completion(text: &str, prompt: PromptStats) -> Completion {
    Completion {
        text: text.trim().to_string(),
        history_text: text.to_string(),
        stop: Stop::Eos,
        stats: GenerationStats {
            prompt,
            generated_tokens: 12,
            image_encode_ms: 800.0,
            time_to_first_token_ms: 1234.0,
            prefill_tokens_per_s: 300.0,
            decode_tokens_per_s: 15.5,
            ..GenerationStats::default()
        },
        params: SamplingParams::default(),
    }
}

/// Renders at both sizes the issue names and snapshots each.
fn snapshot_sizes(chat: &Chat, name: &str) {
    for (w, h) in [(80, 24), (60, 15)] {
        let terminal = chat.render(w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), terminal.backend());
    }
}

const ANSWER: [&str; 9] = [
    "## Findings\n",
    "The frontal chest radiograph shows ",
    "**patchy consolidation** in the ",
    "*right lower lobe*.\n\n",
    "- No pleural effusion\n",
    "- Heart size within normal limits\n\n",
    "Consider `CRP` and a follow-up film.\n\n",
    "```\nimpression: pneumonia\n```\n",
    "Correlate clinically.",
];

// ---------------------------------------------------------------------------------------
// Rendering snapshots.

#[test]
fn snapshot_empty_chat() {
    let chat = Chat::new();
    snapshot_sizes(&chat, "empty");
}

#[test]
fn snapshot_streaming_answer() {
    let mut chat = Chat::new();
    chat.enter("What does this chest X-ray show? Describe the findings.");
    chat.answer(&ANSWER[..5], false);
    snapshot_sizes(&chat, "streaming");
}

#[test]
fn snapshot_image_turn() {
    let mut chat = Chat::new();
    let cell = fixture("images/cell.png");
    chat.enter(&format!("/image {}", cell.display()));
    chat.enter("What kind of cell is this?");
    chat.answer(
        &[
            "This is a ",
            "**neutrophil** with a ",
            "multilobed nucleus.",
        ],
        true,
    );
    snapshot_sizes(&chat, "image_turn");
}

#[test]
fn snapshot_help_overlay() {
    let mut chat = Chat::new();
    chat.enter("/help");
    snapshot_sizes(&chat, "help");
}

#[test]
fn snapshot_error() {
    let mut chat = Chat::new();
    chat.enter("/image /nonexistent/scan.png");
    chat.send(ctrl('u'));
    chat.enter("Compare with the previous study.");
    let (id, _) = chat.last_generate();
    chat.engine(Event::Failed {
        id,
        kind: FailureKind::BadInput,
        error: "the prompt needs 4300 positions (3148 text tokens + 2 images × 576) but the context window is 4096: shorten the text or attach fewer images".into(),
        partial: String::new(),
    });
    snapshot_sizes(&chat, "error");
}

#[test]
fn snapshot_model_swap_in_progress() {
    let mut chat = Chat::new();
    chat.enter("Is there a fracture?");
    chat.answer(&["No fracture is seen."], true);
    chat.enter("/model 34b");
    let (id, _) = chat.last_load();
    chat.engine(Event::LoadProgress {
        id,
        stage: LoadStage::Download,
        done: 6_200_000_000,
        total: 15_400_000_000,
    });
    snapshot_sizes(&chat, "model_swap");
}

// ---------------------------------------------------------------------------------------
// App state with a fake engine.

#[test]
fn send_streams_and_finishes() {
    let mut chat = Chat::new();
    chat.enter("What is shown?");
    let (id, request) = chat.last_generate();
    assert_eq!(request.user, "What is shown?");
    assert!(request.history.is_empty());
    assert!(chat.app.editor.is_empty());
    assert_eq!(chat.app.generation.map(|g| g.id), Some(id));
    chat.answer(&["A ", "cell."], false);
    assert_eq!(chat.app.session.turns[0].answer, "A cell.");
    chat.engine(Event::Finished {
        id,
        completion: completion(" A cell. ", PromptStats::default()),
    });
    let turn = &chat.app.session.turns[0];
    assert_eq!(
        turn.answer, " A cell. ",
        "history keeps the unstripped answer"
    );
    assert!(!turn.interrupted);
    assert_eq!(turn.model.as_deref(), Some("7b"));
    assert!(chat.app.generation.is_none());
    assert!(chat.app.stats.is_some());
    // The next request carries this exchange as history.
    chat.enter("And now?");
    let (_, request) = chat.last_generate();
    assert_eq!(request.history.len(), 1);
    assert_eq!(request.history[0].answer, " A cell. ");
}

#[test]
fn cancel_keeps_the_partial_answer_and_ignores_late_tokens() {
    let mut chat = Chat::new();
    chat.enter("Describe it");
    chat.answer(&["It is ", "a long"], false);
    let (id, _) = chat.last_generate();
    chat.send(key(KeyCode::Esc));
    assert_eq!(chat.host.cancelled, [id]);
    assert!(chat.app.generation.is_none(), "stopped at once");
    assert!(chat.app.session.turns[0].interrupted);
    chat.engine(Event::Token {
        id,
        text: " late".into(),
    });
    assert_eq!(chat.app.session.turns[0].answer, "It is a long");
    let mut done = completion("It is a long", PromptStats::default());
    done.stop = Stop::Cancelled;
    chat.engine(Event::Finished {
        id,
        completion: done,
    });
    assert!(chat.app.session.turns[0].interrupted);
    assert!(chat.app.cancelled.is_none());
    // The chat goes on.
    chat.enter("Go on");
    assert_eq!(chat.generate_count(), 2);
}

#[test]
fn stopping_before_the_first_word_gives_the_question_back() {
    let mut chat = Chat::new();
    let cell = fixture("images/cell.png");
    chat.enter(&format!("/image {}", cell.display()));
    chat.enter("Which stain?");
    let (id, _) = chat.last_generate();
    chat.send(key(KeyCode::Esc));
    assert!(chat.app.session.turns.is_empty());
    assert_eq!(chat.app.editor.text(), "Which stain?");
    assert_eq!(chat.app.pending.len(), 1);
    // Resent at once, before the stopped request reports its end.
    chat.send(key(KeyCode::Enter));
    let mut late = completion("", PromptStats::default());
    late.stop = Stop::Cancelled;
    chat.engine(Event::Finished {
        id,
        completion: late,
    });
    assert_eq!(chat.app.session.turns.len(), 1);
    assert!(
        !chat.app.session.turns[0].interrupted,
        "the new turn is untouched"
    );
    assert!(chat.app.generation.is_some());
}

#[test]
fn ctrl_c_stops_then_quits_and_ctrl_d_quits_on_an_empty_prompt() {
    let mut chat = Chat::new();
    chat.enter("Describe it");
    chat.send(ctrl('c'));
    assert_eq!(chat.host.cancelled.len(), 1);
    assert_eq!(chat.app.exit(), None);
    // The first Ctrl+C only stopped the answer: quitting takes two more.
    assert!(chat.app.quit_armed.is_none());
    chat.send(ctrl('c'));
    assert_eq!(chat.app.exit(), None);
    chat.send(ctrl('c'));
    assert_eq!(chat.app.exit(), Some(Exit::Interrupted));

    // Armed quitting lasts two seconds: after that a Ctrl+C arms it again.
    let mut chat = Chat::new();
    chat.send(ctrl('c'));
    chat.app.quit_armed = Some(Instant::now() - Duration::from_secs(3));
    chat.send(Msg::Tick);
    assert!(chat.app.quit_armed.is_none(), "disarmed after 2 s");
    chat.send(ctrl('c'));
    assert_eq!(chat.app.exit(), None);
    assert!(chat.app.quit_armed.is_some());

    let mut chat = Chat::new();
    chat.type_text("x");
    chat.send(ctrl('d'));
    assert_eq!(chat.app.exit(), None, "Ctrl+D deletes while there is text");
    chat.send(key(KeyCode::Backspace));
    chat.send(ctrl('d'));
    assert_eq!(chat.app.exit(), Some(Exit::Quit));
}

#[test]
fn regen_asks_the_last_question_again() {
    let mut chat = Chat::new();
    let cell = fixture("images/cell.png");
    chat.enter(&format!("/image {}", cell.display()));
    chat.enter("First?");
    chat.answer(&["One."], true);
    chat.enter("Second?");
    chat.answer(&["Two."], true);
    chat.enter("/regen");
    let (_, request) = chat.last_generate();
    assert_eq!(request.user, "Second?");
    assert_eq!(
        request.history.len(),
        1,
        "the regenerated turn is not its own history"
    );
    assert_eq!(request.history_images.len(), 1);
    assert_eq!(chat.app.session.turns.len(), 2);
    assert_eq!(chat.app.session.turns[1].answer, "");
    // Regenerating while answering stops the answer first.
    chat.enter("/regen");
    assert_eq!(chat.host.cancelled.len(), 1);
    assert_eq!(chat.app.session.turns.len(), 2);
}

/// Issue 14: `/regen` draws a new seed each time (so it does not repeat the same sampled
/// answer), shown in the status line and sent with the request; `/set seed N` pins it.
#[test]
fn regen_draws_a_new_seed_unless_one_is_pinned() {
    let mut chat = Chat::new();
    chat.enter("First?");
    chat.answer(&["One."], true);
    assert_eq!(
        chat.last_generate().1.sampling.seed,
        None,
        "a first answer: the default"
    );
    let mut seeds = Vec::new();
    for _ in 0..3 {
        chat.enter("/regen");
        let seed = chat.last_generate().1.sampling.seed.expect("a drawn seed");
        assert_eq!(chat.app.shown_seed, Some(seed));
        let status = chat.render(100, 24).backend().to_string();
        assert!(status.contains(&format!("seed {seed}")), "{status}");
        chat.answer(&["Again."], true);
        seeds.push(seed);
    }
    seeds.dedup();
    assert!(seeds.len() > 1, "new seeds: {seeds:?}");
    chat.enter("/set seed 7");
    chat.enter("/regen");
    assert_eq!(chat.last_generate().1.sampling.seed, Some(7));
    assert_eq!(chat.app.shown_seed, None);
}

#[test]
fn model_swap_keeps_the_conversation() {
    let mut chat = Chat::new();
    chat.enter("Is there a fracture?");
    chat.answer(&["No."], true);
    chat.enter("/model 34b");
    let (id, source) = chat.last_load();
    assert_eq!(source, "34b");
    assert!(chat.app.loading.is_some());
    chat.engine(Event::LoadProgress {
        id,
        stage: LoadStage::Weights,
        done: 1,
        total: 2,
    });
    chat.respond_loaded("llama");
    assert!(chat.app.loading.is_none());
    assert_eq!(
        chat.app.model.as_ref().map(|m| m.family.as_str()),
        Some("llama")
    );
    assert_eq!(chat.app.session.turns.len(), 1);
    chat.enter("Are you sure?");
    let (_, request) = chat.last_generate();
    assert_eq!(request.history.len(), 1);
    assert_eq!(chat.app.session.turns[1].model.as_deref(), Some("34b"));
    // A failed load says so and the chat continues.
    chat.answer(&["Yes."], true);
    chat.enter("/model /nonexistent");
    let (id, _) = chat.last_load();
    chat.engine(Event::Failed {
        id,
        kind: FailureKind::Model,
        error: "cannot load model /nonexistent: not a checkpoint directory".into(),
        partial: String::new(),
    });
    assert!(chat.app.model.is_none() && chat.app.loading.is_none());
    assert_eq!(chat.app.session.turns.len(), 2);
    assert!(chat.app.notices.iter().any(|n| n.error));
}

#[test]
fn save_then_load_restores_the_turns() {
    let mut chat = Chat::new();
    let cell = fixture("images/cell.png");
    chat.enter(&format!("/image {}", cell.display()));
    chat.enter("What is it?");
    chat.answer(&["A cell."], true);
    chat.enter("/save case-1");
    assert_eq!(chat.app.session.name, "case-1");
    let saved = chat.app.session.clone();
    chat.enter("/clear");
    assert!(chat.app.session.turns.is_empty());
    chat.enter("/load case-1");
    assert_eq!(chat.app.session.turns, saved.turns);
    assert_eq!(chat.app.session.name, "case-1");
    assert!(chat.app.session.turns[0].images[0].sha256.is_some());
    // The same file `ask --session` reads.
    let on_disk = chat.store.get("case-1").expect("saved");
    assert_eq!(on_disk.turns, saved.turns);
    // Saving over another session needs its name to be the current one.
    chat.enter("/clear");
    chat.enter("/save case-1");
    assert!(chat.app.notices.last().is_some_and(|n| n.error));
    assert_eq!(
        chat.app.editor.text(),
        "/save case-1",
        "the failed command comes back"
    );
}

#[test]
fn a_failed_send_gives_the_prompt_and_images_back() {
    let mut chat = Chat::new();
    let cell = fixture("images/cell.png");
    chat.enter(&format!("/image {}", cell.display()));
    chat.enter("Too long?");
    assert!(chat.app.pending.is_empty());
    let (id, _) = chat.last_generate();
    chat.engine(Event::Failed {
        id,
        kind: FailureKind::BadInput,
        error: "context overflow".into(),
        partial: String::new(),
    });
    assert_eq!(chat.app.editor.text(), "Too long?");
    assert_eq!(chat.app.pending.len(), 1);
    assert!(chat.app.session.turns.is_empty());
    // A failure after some text keeps the partial answer.
    chat.send(key(KeyCode::Enter));
    chat.answer(&["Partial"], false);
    let (id, _) = chat.last_generate();
    chat.engine(Event::Failed {
        id,
        kind: FailureKind::Internal,
        error: "boom".into(),
        partial: "Partial".into(),
    });
    assert_eq!(chat.app.session.turns[0].answer, "Partial");
    assert!(chat.app.session.turns[0].interrupted);
}

#[test]
fn invalid_commands_keep_the_line_and_explain() {
    let mut chat = Chat::new();
    chat.enter("/set temperature -1");
    assert_eq!(chat.app.editor.text(), "/set temperature -1");
    assert!(chat.app.notices.last().is_some_and(|n| n.error));
    chat.send(ctrl('u'));
    chat.enter("/bogus");
    assert_eq!(chat.app.editor.text(), "/bogus");
    chat.send(ctrl('u'));
    chat.enter("/set temperature 0");
    assert_eq!(chat.app.params().temperature, 0.0);
    chat.enter("Hi");
    let (_, request) = chat.last_generate();
    assert_eq!(request.sampling.temperature, Some(0.0));
}

#[test]
fn paste_attaches_image_paths_and_types_text() {
    let mut chat = Chat::new();
    let cell = fixture("images/cell.png");
    chat.send(Msg::Paste(format!("'{}'", cell.display())));
    assert_eq!(chat.app.pending.len(), 1);
    assert!(chat.app.editor.is_empty());
    chat.send(Msg::Paste("line one\r\nline two".into()));
    assert_eq!(chat.app.editor.text(), "line one\nline two");
    // Alt+Enter is a new line, not a send.
    chat.send(Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)));
    assert_eq!(chat.generate_count(), 0);
    assert_eq!(chat.app.editor.text(), "line one\nline two\n");
}

#[test]
fn history_tab_completion_editor_copy_and_export() {
    let mut chat = Chat::new();
    chat.enter("first question");
    chat.answer(&["Answer **one**."], true);
    chat.send(key(KeyCode::Up));
    assert_eq!(chat.app.editor.text(), "first question");
    chat.send(ctrl('u'));
    chat.type_text("/he");
    chat.send(key(KeyCode::Tab));
    assert_eq!(chat.app.editor.text(), "/help");
    chat.send(ctrl('u'));
    chat.type_text("draft");
    chat.send(ctrl('g'));
    assert_eq!(chat.app.editor.text(), "draft (edited)");
    chat.send(ctrl('u'));
    chat.enter("/copy");
    assert_eq!(chat.host.copied, ["Answer **one**."]);
    assert!(chat
        .app
        .notices
        .last()
        .is_some_and(|n| n.text == "Copied the last answer (15 characters) with a test clipboard"));
    let out = chat._dir.path().join("case.md");
    chat.enter(&format!("/export {}", out.display()));
    let md = std::fs::read_to_string(&out).expect("exported");
    assert!(md.contains("**User:** first question"), "{md}");
    assert!(md.contains("- temperature: 0.2"), "{md}");
}

#[test]
fn scrolling_follows_the_bottom_unless_scrolled_up() {
    let mut chat = Chat::new();
    for i in 0..6 {
        chat.enter(&format!("Question {i}"));
        chat.answer(&["A long answer line.\n\nAnother paragraph here."], true);
    }
    chat.render(60, 15);
    assert!(chat.app.max_top() > 0);
    assert_eq!(chat.app.top_row(), chat.app.max_top());
    chat.send(key(KeyCode::PageUp));
    let top = chat.app.top_row();
    assert!(top < chat.app.max_top());
    chat.enter("More?");
    chat.answer(&["Streaming\n\nmore\n\nrows"], false);
    chat.render(60, 15);
    assert_eq!(
        chat.app.top_row(),
        chat.app.max_top(),
        "sending jumps to the bottom"
    );
    chat.send(key(KeyCode::PageUp));
    let top = chat.app.top_row();
    chat.answer(&["\n\neven more"], false);
    chat.render(60, 15);
    assert_eq!(
        chat.app.top_row(),
        top,
        "scrolled up stays put while streaming"
    );
    chat.send(Msg::Key(KeyEvent::new(KeyCode::End, KeyModifiers::CONTROL)));
    assert_eq!(chat.app.top_row(), chat.app.max_top());
    let wheel = |kind| {
        Msg::Mouse(MouseEvent {
            kind,
            column: 0,
            row: 0,
            modifiers: KeyModifiers::NONE,
        })
    };
    chat.send(wheel(MouseEventKind::ScrollUp));
    assert_eq!(chat.app.top_row() + 3, chat.app.max_top());
    chat.send(wheel(MouseEventKind::ScrollDown));
    assert_eq!(chat.app.scroll, None, "back at the bottom, following again");
}

// ---------------------------------------------------------------------------------------
// Responsiveness: the UI loop takes keys while a slow engine streams.

/// A host whose engine streams tokens slowly from its own thread into the message channel.
struct SlowEngineHost {
    msgs: mpsc::Sender<Msg>,
    tokens: usize,
    every: Duration,
}

impl Host for SlowEngineHost {
    fn engine(&mut self, command: Command) {
        let msgs = self.msgs.clone();
        let (tokens, every) = (self.tokens, self.every);
        match command {
            Command::Load { id, spec } => {
                let _ = msgs.send(Msg::Engine(Event::Loaded {
                    id,
                    info: info(&spec.source, "qwen2"),
                }));
            }
            Command::Generate { id, .. } => {
                std::thread::spawn(move || {
                    for i in 0..tokens {
                        std::thread::sleep(every);
                        let text = format!("w{i} ");
                        if msgs.send(Msg::Engine(Event::Token { id, text })).is_err() {
                            return;
                        }
                    }
                    let done = completion("done", PromptStats::default());
                    let _ = msgs.send(Msg::Engine(Event::Finished {
                        id,
                        completion: done,
                    }));
                    // The scripted user quits once the answer is in.
                    std::thread::sleep(Duration::from_millis(50));
                    let _ = msgs.send(ctrl('c'));
                    let _ = msgs.send(ctrl('c'));
                });
            }
            _ => {}
        }
    }
    fn cancel(&mut self, _id: RequestId) {}
    fn load_image(&mut self, _path: PathBuf) {}
    fn copy(&mut self, _text: &str) -> Result<String, String> {
        Ok(String::new())
    }
    fn edit(&mut self, text: &str) -> Result<String, String> {
        Ok(text.into())
    }
    fn redraw(&mut self) {}
    fn set_mouse(&mut self, _on: bool) {}
    fn view_image(&mut self, _job: huatuo::tui::image::ViewJob) {}
}

#[test]
fn typing_stays_responsive_while_a_slow_engine_streams() {
    let (tx, rx) = mpsc::channel();
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::new(dir.path().to_path_buf());
    let config = AppConfig {
        spec: spec("7b"),
        sampling: SamplingOverrides::default(),
        session: None,
        theme: Theme::default(),
        sessions: store.clone(),
        images: Vec::new(),
    };
    let mut app = App::new(config);
    let mut host = SlowEngineHost {
        msgs: tx.clone(),
        tokens: 400,
        every: Duration::from_millis(5),
    };
    for effect in app.start() {
        huatuo::tui::effects::execute(effect, &mut host, &store);
    }
    // The typist: a question, then (while it is answered) the next one, key by key.
    let typed = "next question typed while streaming";
    let sent_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let typist = {
        let tx = tx.clone();
        let sent_at = Arc::clone(&sent_at);
        std::thread::spawn(move || {
            for c in "first".chars() {
                let _ = tx.send(key(KeyCode::Char(c)));
            }
            let _ = tx.send(key(KeyCode::Enter));
            std::thread::sleep(Duration::from_millis(100));
            for c in typed.chars() {
                sent_at.lock().expect("lock").push(Instant::now());
                let _ = tx.send(key(KeyCode::Char(c)));
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    drop(tx);
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    let mut seen: Vec<(usize, Instant)> = Vec::new();
    let mut typed_while_streaming = None;
    let mut finished = false;
    let mut observe = |app: &App| {
        let len = app.editor.text().chars().count();
        if seen.last().map(|(l, _)| *l) != Some(len) {
            seen.push((len, Instant::now()));
        }
        if app.editor.text() == typed && typed_while_streaming.is_none() {
            typed_while_streaming = Some(app.generation.is_some());
        }
        if app
            .session
            .turns
            .first()
            .is_some_and(|t| t.answer == "done")
        {
            finished = true;
        }
    };
    let start = Instant::now();
    let exit = event_loop(
        &mut terminal,
        &mut app,
        &rx,
        &mut host,
        &store,
        &mut observe,
    );
    typist.join().expect("typist");
    assert_eq!(exit.expect("loop"), Exit::Interrupted);
    assert!(finished, "the answer finished");
    assert_eq!(
        typed_while_streaming,
        Some(true),
        "the whole prompt was typed in while the answer was streaming"
    );
    // Every key appeared within 100 ms of being sent.
    let sent = sent_at.lock().expect("lock");
    for (i, sent) in sent.iter().enumerate() {
        let shown = seen
            .iter()
            .find(|(len, _)| *len > i)
            .map(|(_, t)| *t)
            .expect("key shown");
        let lag = shown.saturating_duration_since(*sent);
        assert!(
            lag < Duration::from_millis(100),
            "key {i} shown after {lag:?}"
        );
    }
    assert!(start.elapsed() >= Duration::from_millis(400 * 5));
}

// ---------------------------------------------------------------------------------------
// The binary without a terminal.

#[test]
fn without_a_terminal_chat_points_to_ask_and_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    for args in [&["chat"][..], &[][..]] {
        let out = assert_cmd::Command::cargo_bin("huatuo")
            .expect("binary")
            .args(args)
            .env("HUATUO_CONFIG_DIR", dir.path())
            .env("HUATUO_DATA_DIR", dir.path())
            .write_stdin("what is this?")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("huatuo ask"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty(), "no escape codes on stdout");
    }
}

/// Issue 14: every conversation is saved after each turn under a dated name, which `/save
/// NAME` renames; later turns go to the same file; `/clear` starts a new one and leaves the
/// old one saved.
#[test]
fn every_turn_is_saved_and_save_renames_the_dated_file() {
    let mut chat = Chat::new();
    chat.enter("What is it?");
    chat.answer(&["A cell."], true);
    let list = chat.store.list().expect("list");
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].name.starts_with("chat-"), "{list:?}");
    assert_eq!(list[0].turns, 1);
    assert_eq!(list[0].first_question.as_deref(), Some("What is it?"));
    assert!(chat.app.auto_named);

    chat.enter("/save case-9");
    let names: Vec<String> = chat
        .store
        .list()
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["case-9"], "renamed, not copied");
    chat.enter("More?");
    chat.answer(&["Yes."], true);
    assert_eq!(chat.store.get("case-9").expect("saved").turns.len(), 2);

    chat.enter("/clear");
    assert_eq!(
        chat.app.session.name, "",
        "the old save does not rename the new one"
    );
    chat.enter("Another case");
    chat.answer(&["Fine."], true);
    let list = chat.store.list().expect("list");
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(chat.store.get("case-9").expect("kept").turns.len(), 2);
}

/// Issue 14: `/drop N` removes the N oldest turns, says so, and saves; the next request no
/// longer carries them. More than there are is refused.
#[test]
fn drop_removes_the_oldest_turns_visibly_and_saves() {
    let mut chat = Chat::new();
    chat.enter("First?");
    chat.answer(&["One."], true);
    chat.enter("Second?");
    chat.answer(&["Two."], true);
    chat.enter("/drop 5");
    assert!(chat.app.notices.last().is_some_and(|n| n.error));
    assert_eq!(chat.app.session.turns.len(), 2);
    chat.send(ctrl('u'));
    chat.enter("/drop 1");
    assert_eq!(chat.app.session.turns.len(), 1);
    assert_eq!(chat.app.session.turns[0].text, "Second?");
    let last = chat.app.notices.last().expect("notice");
    assert!(
        !last.error && last.text.contains("Dropped the 1 oldest turn"),
        "{}",
        last.text
    );
    let saved = chat.store.get(&chat.app.session.name).expect("saved");
    assert_eq!(saved.turns.len(), 1);
    chat.enter("Third?");
    let (_, request) = chat.last_generate();
    assert_eq!(request.history.len(), 1);
    assert_eq!(request.history[0].user, "Second?");
}

/// Issue 14: an answer that fills 80% of the window warns; one cut by the window says the
/// context is full and is marked in the transcript.
#[test]
fn a_filling_context_warns_and_a_full_one_says_so() {
    let mut chat = Chat::new();
    chat.enter("Long?");
    let (id, _) = chat.last_generate();
    let prompt = PromptStats {
        text_tokens: 3400,
        images: 0,
        image_tokens: 0,
        total: 3400,
        context_length: 4096,
    };
    chat.engine(Event::Finished {
        id,
        completion: completion("An answer.", prompt),
    });
    let last = chat.app.notices.last().expect("a warning");
    assert!(
        last.text.contains("fills 83% of the context window"),
        "{}",
        last.text
    );

    chat.enter("Longer?");
    let (id, _) = chat.last_generate();
    let mut full = completion("Cut", prompt);
    full.stop = Stop::Context;
    chat.engine(Event::Finished {
        id,
        completion: full,
    });
    let last = chat.app.notices.last().expect("context full");
    assert!(
        last.error && last.text.starts_with("Context full"),
        "{}",
        last.text
    );
    assert_eq!(chat.app.session.turns[1].stop, Some(Stop::Context));
    let screen = chat.render(100, 30).backend().to_string();
    assert!(screen.contains("(context full)"), "{screen}");
}

/// Issue 16 in the chat: `/image PATH --window W --frame N` attaches a DICOM image with its
/// view; attaching it again with another window re-windows it (and a plain repeat says it is
/// attached already); the request carries the view; a DICOM file without an extension is an
/// image to paste; a bad window is one line.
#[test]
fn dicom_images_carry_their_window_and_frame() {
    let mut chat = Chat::new();
    let ct = fixture("dicom/ct_explicit_le.dcm");
    chat.enter(&format!("/image {} --window lung", ct.display()));
    assert_eq!(chat.app.pending.len(), 1);
    assert_eq!(chat.app.pending[0].window.as_deref(), Some("lung"));
    chat.enter(&format!(
        "/image {} --window 40,400 --frame 1",
        ct.display()
    ));
    assert_eq!(chat.app.pending.len(), 1, "re-windowed, not attached twice");
    assert_eq!(chat.app.pending[0].window.as_deref(), Some("40,400"));
    assert_eq!(chat.app.pending[0].frame, Some(1));
    chat.enter(&format!("/image {}", ct.display()));
    let last = chat.app.notices.last().expect("notice");
    assert!(last.text.contains("already attached"), "{}", last.text);
    chat.enter(&format!("/image {} --window sideways", ct.display()));
    assert!(chat.app.notices.last().is_some_and(|n| n.error));
    chat.send(ctrl('u'));
    chat.enter("What is it?");
    let (_, request) = chat.last_generate();
    assert_eq!(request.images[0].window.as_deref(), Some("40,400"));

    let tmp = tempfile::tempdir().expect("tmp");
    let bare = tmp.path().join("IM000001");
    std::fs::copy(&ct, &bare).expect("copy");
    assert!(huatuo::tui::paste::is_image_file(&bare));
    assert!(!huatuo::tui::paste::is_image_file(&fixture(
        "chat/qwen2.json"
    )));
}

/// Issue 20's editor and message faults: a refused command is left alone and selected (typing
/// replaces it, an arrow edits it); Ctrl+U / Ctrl+K act on the whole prompt; Ctrl+X clears
/// it; `/detach N`; the same file attached twice; a directory is named as one.
#[test]
fn refused_commands_are_selected_and_the_editor_keys_act_on_the_whole_prompt() {
    let mut chat = Chat::new();
    chat.enter("/bogus");
    assert_eq!(chat.app.editor.text(), "/bogus");
    assert!(chat.app.editor.selected());
    chat.type_text("hello");
    assert_eq!(
        chat.app.editor.text(),
        "hello",
        "typing replaces the refused command"
    );
    chat.send(ctrl('x'));
    assert!(chat.app.editor.is_empty());

    chat.enter("/drop x");
    chat.send(key(KeyCode::End));
    assert!(!chat.app.editor.selected());
    chat.send(key(KeyCode::Backspace));
    chat.type_text("1");
    assert_eq!(
        chat.app.editor.text(),
        "/drop 1",
        "an arrow keeps it to edit"
    );
    chat.send(ctrl('x'));

    chat.send(Msg::Paste("line one\nline two".into()));
    chat.send(key(KeyCode::Left));
    chat.send(ctrl('u'));
    assert_eq!(
        chat.app.editor.text(),
        "o",
        "Ctrl+U: to the start of the whole prompt"
    );
    chat.send(ctrl('x'));
    chat.send(Msg::Paste("line one\nline two".into()));
    for _ in 0..12 {
        chat.send(key(KeyCode::Left));
    }
    chat.send(ctrl('k'));
    assert_eq!(
        chat.app.editor.text(),
        "line ",
        "Ctrl+K: to the end of the whole prompt"
    );
    chat.send(ctrl('x'));

    let cell = fixture("images/cell.png");
    let hubble = fixture("images/hubble_deep_field.jpg");
    chat.enter(&format!("/image {}", cell.display()));
    chat.enter(&format!("/image {}", cell.display()));
    assert_eq!(chat.app.pending.len(), 1);
    assert!(chat
        .app
        .notices
        .last()
        .is_some_and(|n| n.text.contains("cell.png is already attached")));
    chat.enter(&format!("/image {}", hubble.display()));
    assert_eq!(chat.app.pending.len(), 2);
    chat.enter("/detach 1");
    assert_eq!(chat.app.pending.len(), 1);
    assert!(chat.app.pending[0].path.ends_with("hubble_deep_field.jpg"));
    chat.enter("/detach 5");
    let last = chat.app.notices.last().expect("notice");
    assert!(
        last.error && last.text.contains("there is 1 attached image"),
        "{}",
        last.text
    );
    chat.send(ctrl('x'));
    chat.enter("/detach");
    assert!(chat.app.pending.is_empty());

    let dir = fixture("images");
    chat.enter(&format!("/image {}", dir.display()));
    let last = chat.app.notices.last().expect("notice");
    assert!(
        last.error && last.text.contains("it is a directory"),
        "{}",
        last.text
    );
    assert!(chat.app.pending.is_empty());
}

/// Issue 20: `/compare A B` asks the last question again with each model in turn (each
/// loaded, answered), then loads the conversation's model back; the answers show side by
/// side on a wide window and stacked on a narrow one, each with what produced it, and the
/// conversation's history is unchanged.
#[test]
fn compare_answers_the_last_question_with_two_models() {
    let mut chat = Chat::new();
    chat.enter("What does the picture show?");
    chat.answer(&["A cell."], true);
    let turns = chat.app.session.turns.clone();
    chat.enter("/compare small big");
    assert_eq!(chat.last_load().1, "small");
    assert!(chat.app.busy());
    chat.respond_loaded("qwen2");
    let (_, request) = chat.last_generate();
    assert!(
        request.history.is_empty(),
        "the last question, as it was asked"
    );
    assert_eq!(request.user, "What does the picture show?");
    chat.answer(&["The ", "small ", "answer."], true);
    assert_eq!(chat.last_load().1, "big");
    chat.respond_loaded("llama");
    chat.answer(
        &["The big answer, which is a little longer than the other one."],
        true,
    );
    // Back to the conversation's model.
    assert_eq!(chat.last_load().1, "7b");
    insta::assert_snapshot!(
        "compare_running_120x20",
        format!("{:?}", chat.render(120, 20).backend())
    );
    chat.respond_loaded("qwen2");
    assert!(!chat.app.busy());
    assert_eq!(
        chat.app.session.turns, turns,
        "the conversation is unchanged"
    );
    insta::assert_snapshot!(
        "compare_wide_120x20",
        format!("{:?}", chat.render(120, 20).backend())
    );
    insta::assert_snapshot!(
        "compare_narrow_70x24",
        format!("{:?}", chat.render(70, 24).backend())
    );
    let out = chat._dir.path().join("compare.md");
    chat.enter(&format!("/export {}", out.display()));
    let md = std::fs::read_to_string(&out).expect("exported");
    assert!(
        md.contains("## Compare: What does the picture show?"),
        "{md}"
    );
    assert!(md.contains("### small\n\nThe small answer."), "{md}");
    assert!(md.contains("### big\n\nThe big answer"), "{md}");

    // Without a question there is nothing to compare.
    let mut fresh = Chat::new();
    fresh.enter("/compare a b");
    let last = fresh.app.notices.last().expect("notice");
    assert!(
        last.error && last.text.contains("Ask a question first"),
        "{}",
        last.text
    );
    fresh.send(ctrl('x'));
    fresh.enter("/compare onlyone");
    assert!(fresh
        .app
        .notices
        .last()
        .is_some_and(|n| n.text.contains("two models")));
}

/// Issue 20: `/copy N` copies answer N, `/copy code` the last code block; asking for what is
/// not there copies nothing and says so.
#[test]
fn copy_takes_an_answer_number_or_the_last_code_block() {
    let mut chat = Chat::new();
    chat.enter("first");
    chat.answer(
        &["One, with code:\n```sh\nhuatuo ask\n```\nand more."],
        true,
    );
    chat.enter("second");
    chat.answer(&["Two."], true);
    chat.enter("/copy 1");
    chat.enter("/copy code");
    chat.enter("/copy");
    assert_eq!(
        chat.host.copied,
        [
            "One, with code:\n```sh\nhuatuo ask\n```\nand more.",
            "huatuo ask",
            "Two."
        ]
    );
    chat.enter("/copy 3");
    let last = chat.app.notices.last().expect("notice");
    assert!(
        last.error && last.text.contains("the conversation has 2 answers"),
        "{}",
        last.text
    );
    assert_eq!(chat.host.copied.len(), 3, "nothing more was copied");
}

/// Issue 20: F2 gives the mouse back to the terminal for selecting text, and back again.
#[test]
fn f2_toggles_mouse_capture_for_text_selection() {
    let mut chat = Chat::new();
    assert!(chat.app.mouse);
    chat.send(key(KeyCode::F(2)));
    assert!(!chat.app.mouse);
    assert!(chat
        .app
        .notices
        .last()
        .is_some_and(|n| n.text.contains("select text")));
    chat.send(key(KeyCode::F(2)));
    assert_eq!(chat.host.mouse, [false, true]);
}

/// Issue 20: the status line never shows the counts and speed of another conversation or
/// another model: they go at /model, /load and /clear.
#[test]
fn status_is_refreshed_after_model_load_and_clear() {
    let status = |chat: &Chat| -> String {
        let t = chat.render(120, 20);
        let buf = t.backend().buffer();
        (0..120)
            .map(|x| buf[(x, 19)].symbol().to_string())
            .collect::<String>()
    };
    let mut chat = Chat::new();
    chat.enter("Hello");
    chat.answer(&["Hi there."], true);
    assert!(status(&chat).contains("tok/s") && status(&chat).contains("ctx"));
    chat.enter("/model 34b");
    let s = status(&chat);
    assert!(!s.contains("tok/s") && !s.contains("ctx"), "{s}");
    chat.respond_loaded("llama");
    assert!(status(&chat).contains("34b"), "{}", status(&chat));
    chat.enter("Again");
    chat.answer(&["Yes."], true);
    chat.enter("/save first");
    chat.enter("/clear");
    let s = status(&chat);
    assert!(!s.contains("tok/s") && !s.contains("ctx"), "{s}");
    chat.enter("Third");
    chat.answer(&["Three."], true);
    chat.enter("/load first");
    let s = status(&chat);
    assert!(!s.contains("tok/s") && !s.contains("ctx"), "{s}");
}

/// Issue 20, acceptance 1 (its TestBackend half; tests/e2e.rs has the terminal one): `/view 1`
/// fills the screen with the image, Tab shows the model's 336×336 input, Esc goes back.
#[test]
fn view_fills_the_screen_and_toggles_to_the_model_input() {
    let mut chat = Chat::new();
    let cell = fixture("images/cell.png");
    chat.enter(&format!("/image {}", cell.display()));
    chat.enter("What does the picture show?");
    chat.answer(&["A cell."], true);
    // The screen's size is known once a frame was drawn.
    let _ = chat.render(100, 40);
    chat.enter("/view 1");
    let viewer = chat.app.viewer.as_ref().expect("open");
    let picture = viewer
        .picture
        .as_ref()
        .expect("rendered")
        .as_ref()
        .expect("ok");
    assert_eq!((picture.width, picture.height), (550, 660));
    let size = picture.protocol.size();
    assert!(size.height >= 30, "most of the screen's height: {size:?}");
    insta::assert_snapshot!(
        "view_original_100x40",
        format!("{:?}", chat.render(100, 40).backend())
    );
    chat.send(key(KeyCode::Tab));
    let viewer = chat.app.viewer.as_ref().expect("open");
    assert!(viewer.model_input);
    let picture = viewer
        .picture
        .as_ref()
        .expect("rendered")
        .as_ref()
        .expect("ok");
    assert_eq!((picture.width, picture.height), (336, 336));
    insta::assert_snapshot!(
        "view_model_input_100x40",
        format!("{:?}", chat.render(100, 40).backend())
    );
    chat.send(key(KeyCode::Esc));
    assert!(chat.app.viewer.is_none());
    assert_eq!(
        chat.generate_count(),
        1,
        "Esc closed the viewer, nothing else"
    );
    chat.send(key(KeyCode::F(3)));
    assert!(chat.app.viewer.as_ref().is_some_and(|v| v.number == 1));
    chat.send(key(KeyCode::Esc));
    chat.enter("/view 2");
    let last = chat.app.notices.last().expect("notice");
    assert!(
        last.error && last.text.contains("the conversation has 1 image"),
        "{}",
        last.text
    );
}

/// Issue 20: the viewer re-windows a greyscale DICOM image as a reading station does (digits
/// for the presets, ←/→ the width, ↑/↓ the level, 0 back). The earlier answer keeps the window
/// it saw; closing the viewer attaches the image with the new window to the next question, whose
/// request and record carry it. A PNG has no window to change.
#[test]
fn the_viewer_rewindows_dicom_for_the_next_question() {
    let mut chat = Chat::new();
    let ct = fixture("dicom/ct_explicit_le.dcm");
    chat.enter(&format!("/image {}", ct.display()));
    chat.enter("What is it?");
    chat.answer(&["A CT slice."], true);
    let _ = chat.render(100, 40);
    chat.enter("/view 1");
    let applied = |chat: &Chat| chat.app.viewer.as_ref().and_then(|v| v.applied);
    let window = |chat: &Chat| chat.app.viewer.as_ref().and_then(|v| v.window.clone());
    let first = applied(&chat).expect("a greyscale DICOM image has a window");
    assert_eq!(window(&chat), None, "the file's own window to start with");

    chat.send(key(KeyCode::Char('4')));
    assert_eq!(window(&chat).as_deref(), Some("lung"));
    let lung = applied(&chat).expect("window");
    assert_eq!((lung.center, lung.width), (-600.0, 1500.0));
    chat.send(key(KeyCode::Right));
    assert_eq!(window(&chat).as_deref(), Some("-600,1650"), "10% wider");
    chat.send(key(KeyCode::Up));
    assert_eq!(
        window(&chat).as_deref(),
        Some("-517,1650"),
        "level up 5% of the width"
    );
    chat.send(key(KeyCode::Left));
    chat.send(key(KeyCode::Down));
    assert_eq!(window(&chat).as_deref(), Some("-591,1485"));
    let screen = chat.render(100, 40).backend().to_string();
    assert!(screen.contains("window -591,1485"), "{screen}");
    assert!(screen.contains("for the next question"), "{screen}");
    chat.send(key(KeyCode::Tab));
    let model = chat.app.viewer.as_ref().expect("open");
    assert!(
        matches!(&model.picture, Some(Ok(p)) if (p.width, p.height) == (336, 336)),
        "the model's input through the new window"
    );
    chat.send(key(KeyCode::Tab));

    chat.send(key(KeyCode::Char('0')));
    assert_eq!(window(&chat), None, "0: back to the image's own window");
    let back = applied(&chat).expect("window");
    assert_eq!((back.center, back.width), (first.center, first.width));
    chat.send(key(KeyCode::Esc));
    assert!(
        chat.app.pending.is_empty(),
        "nothing changed, nothing attached"
    );

    chat.enter("/view 1");
    chat.send(key(KeyCode::Char('8')));
    chat.send(key(KeyCode::Esc));
    assert!(chat.app.viewer.is_none());
    assert_eq!(chat.app.pending.len(), 1, "attached for the next question");
    assert_eq!(chat.app.pending[0].window.as_deref(), Some("bone"));
    let last = chat.app.notices.last().expect("notice");
    assert!(
        last.text.contains("next question") && last.text.contains("bone (400,1800)"),
        "{}",
        last.text
    );
    assert_eq!(
        chat.app.session.turns[0].images[0].window, None,
        "the first answer keeps the window it saw"
    );

    chat.enter("And in the bone window?");
    let (_, request) = chat.last_generate();
    assert_eq!(request.images.len(), 1);
    assert_eq!(request.images[0].window.as_deref(), Some("bone"));
    chat.answer(&["Bone."], true);
    let turn = &chat.app.session.turns[1];
    assert_eq!(turn.images[0].window.as_deref(), Some("bone"));
    let record = turn.record.as_ref().expect("the turn's record");
    let windows: Vec<_> = record.images.iter().map(|i| i.window.clone()).collect();
    assert_eq!(windows, [None, Some("bone".to_string())]);

    // A PNG: the arrows do nothing.
    chat.enter(&format!("/image {}", fixture("images/cell.png").display()));
    chat.enter("/view 3");
    assert!(applied(&chat).is_none());
    chat.send(key(KeyCode::Char('4')));
    chat.send(key(KeyCode::Left));
    assert_eq!(window(&chat), None);
    chat.send(key(KeyCode::Esc));
    assert_eq!(chat.app.pending.len(), 1);
}

/// Issue 20: scrolled up with more below, the "↓ N more" marker has its own row: it never
/// covers a row of text.
#[test]
fn the_more_below_marker_never_covers_text() {
    let mut chat = Chat::new();
    chat.enter("List them");
    let items: Vec<String> = (0..40).map(|i| format!("- item {i:02}\n")).collect();
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    chat.answer(&items, true);
    chat.render(60, 15);
    chat.send(key(KeyCode::PageUp));
    let screen = chat.render(60, 15).backend().to_string();
    let lines: Vec<&str> = screen.lines().collect();
    let marker = lines
        .iter()
        .position(|l| l.contains("more · End"))
        .unwrap_or_else(|| panic!("a marker: {screen}"));
    assert!(
        !lines[marker].contains("item"),
        "the marker's row holds no text: {screen}"
    );
    // The rows above it run on without a gap: the next item is the one below the marker.
    let shown: Vec<u32> = lines[..marker]
        .iter()
        .filter_map(|l| l.split("item ").nth(1))
        .filter_map(|t| t.trim().trim_end_matches('"').trim().parse().ok())
        .collect();
    assert!(shown.len() > 5, "{screen}");
    assert!(shown.windows(2).all(|w| w[1] == w[0] + 1), "{shown:?}");
    let below: usize = lines[marker]
        .split('↓')
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a count");
    let last = *shown.last().expect("shown") as usize;
    assert!(
        below >= 39 - last,
        "the items after {last} (and the rows after them) are counted: {below}"
    );
}

/// Issue 20: in a wide window prose wraps at most [`PROSE_MAX`] columns wide, so lines stay
/// readable; a narrow window still uses its whole width.
#[test]
fn prose_wraps_at_a_readable_width_in_wide_windows() {
    use huatuo::tui::transcript::PROSE_MAX;
    let mut chat = Chat::new();
    let long = "The consolidation is in the right lower lobe. ".repeat(12);
    chat.enter(&long);
    chat.answer(&[&long], true);
    let widest = |w: u16| {
        let screen = chat.render(w, 40).backend().to_string();
        screen
            .lines()
            .filter(|l| l.contains("consolidation"))
            .map(|l| l.trim_matches('"').trim_end().chars().count())
            .max()
            .expect("prose on screen")
    };
    let wide = widest(200);
    assert!(
        wide <= usize::from(PROSE_MAX) && wide > 80,
        "wrapped at most {PROSE_MAX} wide: {wide}"
    );
    assert!(widest(70) <= 70);
}
