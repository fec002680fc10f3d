//! The chat screen's own cost (issues 20 and 21): frame time and keystroke-to-screen latency,
//! measured on the real `App` and `ui::render` with a long Markdown transcript and 20 images
//! (halfblock thumbnails, the most cells to draw), while an answer streams in.
//!
//! - frame: one whole `Terminal::draw` (layout, Markdown, wrapping, thumbnails, the diff, and
//!   the escape sequences crossterm writes for it, to a sink), idle and while tokens arrive;
//! - echo: a key typed while the model streams, from `App::update` to the frame that shows it
//!   drawn, which is what the event loop does when a key arrives (it wakes at once).
//!
//! Prints medians and 99th percentiles of several runs, for each size given.
//!
//!     cargo run --release --example ui_frame -- [TURNS] [IMAGES]

use std::path::{Path, PathBuf};
use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use huatuo::chat::session::{Session, Store, Turn};
use huatuo::protocol::{
    Command, DType, DevicePref, Event, ImageRef, ModelInfo, ModelSpec, PromptStats,
    SamplingOverrides, SamplingParams,
};
use huatuo::tui::image::{load_with, thumbnail_max};
use huatuo::tui::theme::Theme;
use huatuo::tui::{ui, App, AppConfig, Effect, Msg};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};
use ratatui_image::picker::Picker;

const ANSWER: &str =
    "## Findings\n\nThe image shows a **chest X-ray** in posteroanterior view.\n\n\
- The lungs are clear, without focal consolidation.\n- No pleural effusion or pneumothorax.\n\
- The cardiac silhouette is within normal limits.\n\n\
| Structure | Finding | Note |\n|---|---|---|\n| Lungs | clear | no consolidation |\n\
| Heart | normal | CTR 0.45 |\n| Bones | intact | no fracture |\n\n\
> Impression: no acute cardiopulmonary process.\n\n```\nCTR = 0.45\n```\n\
Further comparison with [prior studies](https://example.org/prior) is advised if symptoms \
persist; a *lateral view* may help.";

fn images() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut all: Vec<PathBuf> = ["images", "dicom"]
        .iter()
        .flat_map(|d| std::fs::read_dir(root.join(d)).into_iter().flatten())
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "png" || e == "jpg" || e == "dcm")
                && load_with(p, &Picker::halfblocks(), thumbnail_max(80, 24)).is_ok()
        })
        .collect();
    all.sort();
    all
}

fn turn(i: usize, image: Option<&PathBuf>) -> Turn {
    let text = format!("Question {i}: what does the picture show, and is anything abnormal?");
    Turn {
        text: text.clone(),
        user: text,
        images: image
            .map(|p| ImageRef {
                path: p.clone(),
                sha256: None,
                window: None,
                frame: None,
            })
            .into_iter()
            .collect(),
        answer: ANSWER.to_string(),
        interrupted: false,
        stop: None,
        record: None,
        model: Some("7b".into()),
        settings: None,
        time: 0,
    }
}

fn info() -> ModelInfo {
    ModelInfo {
        source: "7b".into(),
        path: PathBuf::from("/models/7b"),
        repo: None,
        revision: None,
        family: "qwen2".into(),
        dtype: "f32".into(),
        device: "cpu".into(),
        quantization: "none".into(),
        context_length: 32768,
        tokens_per_image: 576,
        defaults: SamplingParams::default(),
        files: Vec::new(),
        quant_file: None,
        engine: Default::default(),
    }
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Feeds `msg` and the replies of the effects the bench can answer (image loads).
fn feed(app: &mut App, msg: Msg, picker: &Picker, max: ratatui::layout::Size) -> Vec<Effect> {
    let mut pending = vec![msg];
    let mut rest = Vec::new();
    while let Some(msg) = pending.pop() {
        for effect in app.update(msg) {
            match effect {
                Effect::LoadImage(path) => {
                    let result = load_with(&path, picker, max);
                    pending.push(Msg::Image { path, result });
                }
                other => rest.push(other),
            }
        }
    }
    rest
}

fn bench(width: u16, height: u16, turns: usize, n_images: usize) {
    let dir = std::env::temp_dir().join(format!("huatuo-ui-frame-{}", std::process::id()));
    let files = images();
    assert!(!files.is_empty(), "no fixture images");
    let mut session = Session::new("bench");
    session.turns = (0..turns)
        .map(|i| turn(i, (i < n_images).then(|| &files[i % files.len()])))
        .collect();
    let spec = ModelSpec {
        source: "7b".into(),
        revision: None,
        device: DevicePref::Cpu,
        dtype: DType::F32,
        offline: true,
        quant: None,
    };
    let mut app = App::new(AppConfig {
        spec,
        sampling: SamplingOverrides::default(),
        session: Some(session),
        theme: Theme::default(),
        sessions: Store::new(dir.clone()),
        images: Vec::new(),
    });
    let picker = Picker::halfblocks();
    let max = thumbnail_max(width, height);
    let mut load = None;
    for effect in app.start() {
        match effect {
            Effect::LoadImage(path) => {
                let result = load_with(&path, &picker, max);
                feed(&mut app, Msg::Image { path, result }, &picker, max);
            }
            Effect::Engine(Command::Load { id, .. }) => load = Some(id),
            _ => {}
        }
    }
    if let Some(id) = load {
        feed(
            &mut app,
            Msg::Engine(Event::Loaded { id, info: info() }),
            &picker,
            max,
        );
    }
    // Every thumbnail read: the screen as the user sees it after scrolling through.
    let thumbnails = app
        .images
        .values()
        .filter(|s| matches!(s, huatuo::tui::app::ImageState::Ready(_)))
        .count();

    let area = Rect::new(0, 0, width, height);
    let mut terminal = Terminal::with_options(
        CrosstermBackend::new(std::io::sink()),
        TerminalOptions {
            viewport: Viewport::Fixed(area),
        },
    )
    .expect("terminal");
    let draw = |terminal: &mut Terminal<CrosstermBackend<std::io::Sink>>, app: &App| {
        terminal.draw(|f| ui::render(app, f)).expect("draw");
    };

    // Idle frames.
    let mut idle = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        draw(&mut terminal, &app);
        idle.push(t.elapsed().as_secs_f64() * 1e3);
    }

    // Scrolling up through the whole transcript a page at a time (thumbnails in view), twice.
    let mut scrolling = Vec::new();
    for _ in 0..2 {
        feed(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::End, KeyModifiers::CONTROL)),
            &picker,
            max,
        );
        draw(&mut terminal, &app);
        loop {
            let top = app.top_row();
            let t = Instant::now();
            feed(
                &mut app,
                Msg::Key(KeyEvent::from(KeyCode::PageUp)),
                &picker,
                max,
            );
            draw(&mut terminal, &app);
            scrolling.push(t.elapsed().as_secs_f64() * 1e3);
            if app.top_row() == top {
                break;
            }
        }
    }
    feed(
        &mut app,
        Msg::Key(KeyEvent::new(KeyCode::End, KeyModifiers::CONTROL)),
        &picker,
        max,
    );

    // A question, then an answer streaming token by token, with a key typed every 4 tokens.
    let mut generate = None;
    for c in "Is the heart enlarged?".chars() {
        feed(
            &mut app,
            Msg::Key(KeyEvent::from(KeyCode::Char(c))),
            &picker,
            max,
        );
    }
    for effect in feed(
        &mut app,
        Msg::Key(KeyEvent::from(KeyCode::Enter)),
        &picker,
        max,
    ) {
        if let Effect::Engine(Command::Generate { id, .. }) = effect {
            generate = Some(id);
        }
    }
    let id = generate.expect("the question was sent");
    let prompt = PromptStats {
        text_tokens: 4000,
        images: n_images,
        image_tokens: 576 * n_images,
        total: 4000 + 576 * n_images,
        context_length: 32768,
    };
    feed(
        &mut app,
        Msg::Engine(Event::Started {
            id,
            prompt,
            params: SamplingParams::default(),
        }),
        &picker,
        max,
    );
    let words: Vec<&str> = ANSWER.split_inclusive(' ').collect();
    let (mut streaming, mut echo) = (Vec::new(), Vec::new());
    for k in 0..600 {
        let token = words[k % words.len()].to_string();
        let t = Instant::now();
        feed(
            &mut app,
            Msg::Engine(Event::Token { id, text: token }),
            &picker,
            max,
        );
        draw(&mut terminal, &app);
        streaming.push(t.elapsed().as_secs_f64() * 1e3);
        if k % 4 == 0 {
            let c = char::from(b'a' + (k / 4 % 26) as u8);
            let before = app.editor.text().len();
            let t = Instant::now();
            feed(
                &mut app,
                Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)),
                &picker,
                max,
            );
            draw(&mut terminal, &app);
            echo.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(app.editor.text().len(), before + 1, "the key was taken");
        }
    }
    println!(
        "{width}x{height}, {turns} turns ({} rows of transcript), {thumbnails} images: \
         frame idle median {:.2} ms (p99 {:.2}), scrolling through median {:.2} ms (p99 {:.2}), streaming median {:.2} ms (p99 {:.2}); \
         key echo while streaming median {:.2} ms (p99 {:.2}, max {:.2}) [targets: 16 ms frame, 50 ms echo]",
        app.view.content_rows.get(),
        percentile(idle.clone(), 0.5),
        percentile(idle, 0.99),
        percentile(scrolling.clone(), 0.5),
        percentile(scrolling, 0.99),
        percentile(streaming.clone(), 0.5),
        percentile(streaming, 0.99),
        percentile(echo.clone(), 0.5),
        percentile(echo.clone(), 0.99),
        percentile(echo, 1.0),
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let turns: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(40);
    let images: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    for (w, h) in [(200, 60), (160, 45), (80, 24)] {
        bench(w, h, turns, images);
    }
}
