//! Frame time of the chat screen (issue 20): how long one `ui::render` of the whole screen
//! takes on a conversation of N turns, idle (nothing changed) and while an answer streams
//! (one token more each frame), at 160×45 cells. Prints medians of several runs.
//!
//!     cargo run --release --example ui_frame -- [TURNS]

use std::time::Instant;

use huatuo::chat::session::{Session, Store, Turn};
use huatuo::protocol::{DType, DevicePref, ModelSpec, SamplingOverrides};
use huatuo::tui::theme::Theme;
use huatuo::tui::{ui, App, AppConfig};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

const ANSWER: &str = "The image shows a **chest X-ray** in posteroanterior view. Findings:\n\n\
- The lungs are clear, without focal consolidation.\n- No pleural effusion or pneumothorax.\n\
- The cardiac silhouette is within normal limits.\n\n> Impression: no acute cardiopulmonary \
process.\n\n```\nCTR 0.45\n```\nFurther comparison with prior studies is advised if symptoms persist.";

fn turn(i: usize) -> Turn {
    Turn {
        text: format!("Question {i}: what does the picture show, and is anything abnormal?"),
        user: format!("Question {i}: what does the picture show, and is anything abnormal?"),
        images: Vec::new(),
        answer: ANSWER.to_string(),
        interrupted: false,
        stop: None,
        record: None,
        model: Some("7b".into()),
        settings: None,
        time: 0,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let turns: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(40);
    let dir = std::env::temp_dir().join(format!("huatuo-ui-frame-{}", std::process::id()));
    let mut session = Session::new("bench");
    session.turns = (0..turns).map(turn).collect();
    let mut app = App::new(AppConfig {
        spec: ModelSpec {
            source: "7b".into(),
            revision: None,
            device: DevicePref::Cpu,
            dtype: DType::F32,
            offline: true,
            quant: None,
        },
        sampling: SamplingOverrides::default(),
        session: Some(session),
        theme: Theme::default(),
        sessions: Store::new(dir.clone()),
        images: Vec::new(),
    });
    let mut terminal = Terminal::new(TestBackend::new(160, 45)).expect("terminal");
    let frames = 200;
    let mut idle = Vec::new();
    let mut streaming = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..frames {
            terminal.draw(|f| ui::render(&app, f)).expect("draw");
        }
        idle.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(frames));
        let start = Instant::now();
        for k in 0..frames {
            if let Some(last) = app.session.turns.last_mut() {
                last.answer
                    .push_str(if k % 7 == 0 { "\n" } else { " word" });
            }
            terminal.draw(|f| ui::render(&app, f)).expect("draw");
        }
        streaming.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(frames));
    }
    println!(
        "{turns} turns, 160x45: idle frame {:.0} µs, streaming frame {:.0} µs (medians of 5 × {frames} frames)",
        median(idle),
        median(streaming)
    );
    let _ = std::fs::remove_dir_all(dir);
}
