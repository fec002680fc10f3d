//! `/compare A B`: the last question answered again by two models (any two sources: `7b`,
//! `34b`, repo ids or checkpoint directories), shown side by side (stacked
//! on narrow windows), each with what produced it. The models load one after the other, so
//! two that do not fit in memory together still compare; then the model of the conversation
//! is loaded again and the conversation goes on with it. The comparison is not part of the
//! conversation: the next question's history is unchanged.

use ratatui::text::{Line, Span};

use crate::chat::session::Session;
use crate::protocol::{
    Command, Event, GenerateRequest, GenerationStats, ModelInfo, ModelSpec, RequestId, Stop,
};

use super::app::{short_model_name, App};
use super::markdown::MdLine;
use super::msg::Effect;
use super::transcript::Row;
use super::wrap::wrap;

/// Side by side from this width; stacked below it.
pub const SIDE_BY_SIDE_WIDTH: u16 = 100;

/// One model's answer in a comparison.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompareAnswer {
    pub source: String,
    pub text: String,
    pub info: Option<ModelInfo>,
    pub stats: Option<GenerationStats>,
    pub stop: Option<Stop>,
    pub error: Option<String>,
}

/// What the comparison waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Load,
    Generate,
    /// The conversation's own model, loading again.
    Restore,
    Done,
}

/// A comparison in progress or done.
#[derive(Debug, Clone, PartialEq)]
pub struct Compare {
    pub question: String,
    pub answers: Vec<CompareAnswer>,
    /// Shown after this many turns.
    pub after_turns: usize,
    request: GenerateRequest,
    /// The model the conversation goes on with.
    restore: ModelSpec,
    step: usize,
    phase: Phase,
    id: RequestId,
}

impl Compare {
    pub fn running(&self) -> bool {
        self.phase != Phase::Done
    }
}

impl App {
    /// Starts comparing `models` on the last question.
    pub(crate) fn start_compare(&mut self, models: Vec<String>) -> Vec<Effect> {
        if self.busy() {
            self.error("Wait for the answer or the model to finish loading, then /compare");
            return Vec::new();
        }
        let Some(last) = self.session.turns.last() else {
            self.error("Ask a question first: /compare answers the last one with two models");
            return Vec::new();
        };
        let mut earlier = Session::new("");
        earlier.turns = self.session.turns[..self.session.turns.len() - 1].to_vec();
        let request = earlier.next_turn(
            &last.text,
            last.images.clone(),
            &self.sampling,
            &models[0],
            &self.sessions.images(),
        );
        let request = match request {
            Ok((request, _)) => request,
            Err(e) => {
                self.error(format!("Cannot compare: {e}"));
                return Vec::new();
            }
        };
        let question = last.text.clone();
        let restore = self.spec.clone();
        let answers = models
            .iter()
            .map(|m| CompareAnswer {
                source: m.clone(),
                ..CompareAnswer::default()
            })
            .collect();
        self.compare = Some(Compare {
            question,
            answers,
            after_turns: self.session.turns.len(),
            request,
            restore,
            step: 0,
            phase: Phase::Load,
            id: 0,
        });
        self.scroll = None;
        self.compare_next()
    }

    /// The command for the comparison's current step.
    fn compare_next(&mut self) -> Vec<Effect> {
        let id = self.next_id();
        let Some(c) = self.compare.as_mut() else {
            return Vec::new();
        };
        c.id = id;
        match c.phase {
            Phase::Load => vec![Effect::Engine(Command::Load {
                id,
                spec: ModelSpec {
                    source: c.answers[c.step].source.clone(),
                    ..c.restore.clone()
                },
            })],
            Phase::Generate => vec![Effect::Engine(Command::Generate {
                id,
                request: Box::new(c.request.clone()),
            })],
            Phase::Restore => vec![Effect::Engine(Command::Load {
                id,
                spec: c.restore.clone(),
            })],
            Phase::Done => Vec::new(),
        }
    }

    /// After one model's answer (or failure): the next model, or back to the conversation's.
    fn compare_advance(&mut self) -> Vec<Effect> {
        let Some(c) = self.compare.as_mut() else {
            return Vec::new();
        };
        if c.step + 1 < c.answers.len() {
            c.step += 1;
            c.phase = Phase::Load;
        } else {
            c.phase = Phase::Restore;
        }
        self.compare_next()
    }

    /// Handles `event` when it belongs to the comparison; `None` when it does not.
    pub(crate) fn on_compare_event(&mut self, event: &Event) -> Option<Vec<Effect>> {
        let c = self.compare.as_mut().filter(|c| c.running())?;
        let id = match event {
            Event::LoadProgress { id, .. }
            | Event::Loaded { id, .. }
            | Event::Restored { id, .. }
            | Event::Started { id, .. }
            | Event::Token { id, .. }
            | Event::Finished { id, .. }
            | Event::Failed { id, .. } => *id,
            Event::Unloaded => return None,
        };
        if id != c.id {
            return None;
        }
        let step = c.step;
        Some(match (c.phase, event) {
            (Phase::Load, Event::Loaded { info, .. }) => {
                c.answers[step].info = Some(info.clone());
                c.phase = Phase::Generate;
                self.compare_next()
            }
            (Phase::Load | Phase::Generate, Event::Failed { error, partial, .. }) => {
                c.answers[step].error = Some(error.clone());
                c.answers[step].text.push_str(partial);
                self.compare_advance()
            }
            (Phase::Generate, Event::Token { text, .. }) => {
                c.answers[step].text.push_str(text);
                Vec::new()
            }
            (Phase::Generate, Event::Finished { completion, .. }) => {
                c.answers[step].text = completion.text.clone();
                c.answers[step].stats = Some(completion.stats.clone());
                c.answers[step].stop = Some(completion.stop);
                self.compare_advance()
            }
            (Phase::Restore, Event::Loaded { info, .. }) => {
                c.phase = Phase::Done;
                self.model = Some(info.clone());
                self.notice(format!(
                    "Compared; the conversation goes on with {}",
                    short_model_name(&info.source)
                ));
                Vec::new()
            }
            (Phase::Restore, Event::Failed { error, .. }) => {
                c.phase = Phase::Done;
                self.model = None;
                self.error(format!(
                    "Cannot load the conversation's model again: {error}; /model loads one"
                ));
                Vec::new()
            }
            _ => Vec::new(),
        })
    }

    /// Esc during a comparison: stop the current step, then load the conversation's model.
    pub(crate) fn stop_compare(&mut self) -> Vec<Effect> {
        let Some(c) = self.compare.as_mut().filter(|c| c.running()) else {
            return Vec::new();
        };
        let mut effects = vec![Effect::Cancel(c.id)];
        if c.phase != Phase::Restore {
            for a in c.answers.iter_mut().skip(c.step) {
                a.error.get_or_insert_with(|| "stopped".into());
            }
            c.phase = Phase::Restore;
            effects.extend(self.compare_next());
        }
        effects
    }
}

/// What produced an answer, in one line: `qwen2 f32 cpu · 24 tokens · 120.4 tok/s`.
fn record_line(a: &CompareAnswer) -> String {
    let mut parts = Vec::new();
    if let Some(info) = &a.info {
        let mut how = info.describe();
        if !["none", "unknown", ""].contains(&info.quantization.as_str()) {
            how.push(' ');
            how.push_str(&info.quantization);
        }
        parts.push(how);
    }
    if let Some(s) = &a.stats {
        parts.push(crate::text::count(s.generated_tokens, "token", "tokens"));
        parts.push(format!("{:.1} tok/s", s.decode_tokens_per_s));
    }
    if let Some(e) = &a.error {
        parts.push(format!("failed: {e}"));
    }
    parts.join(" · ")
}

/// The comparison's rows at `width`: side by side when wide, stacked when narrow.
pub fn rows(app: &App, c: &Compare, width: u16) -> Vec<Row> {
    let theme = &app.theme;
    let mut out = vec![Row::Text(Line::default())];
    let header = format!("▍Compare: {}", c.question.replace('\n', " "));
    out.extend(
        wrap(
            &MdLine::plain(vec![Span::styled(header, theme.user_label)]),
            usize::from(width),
        )
        .into_iter()
        .map(Row::Text),
    );
    let column = |a: &CompareAnswer, w: u16, i: usize| -> Vec<Line<'static>> {
        let mut lines = Vec::new();
        let running = c.running() && i == c.step && a.stats.is_none() && a.error.is_none();
        let label = format!(
            "▍{}{}",
            short_model_name(&a.source),
            if running { " …" } else { "" }
        );
        lines.push(Line::from(Span::styled(label, theme.assistant_label)));
        for para in a.text.split('\n') {
            lines.extend(wrap(
                &MdLine::plain(vec![Span::styled(para.to_string(), theme.assistant_text)]),
                usize::from(w),
            ));
        }
        let record = record_line(a);
        if !record.is_empty() {
            lines.extend(wrap(
                &MdLine::plain(vec![Span::styled(record, theme.hint)]),
                usize::from(w),
            ));
        }
        lines
    };
    if width >= SIDE_BY_SIDE_WIDTH && c.answers.len() == 2 {
        let gap = 3u16;
        let w = (width - gap) / 2;
        let left = column(&c.answers[0], w, 0);
        let right = column(&c.answers[1], w, 1);
        for i in 0..left.len().max(right.len()) {
            let mut spans: Vec<Span<'static>> = Vec::new();
            let l = left.get(i).cloned().unwrap_or_default();
            let used: usize = l
                .spans
                .iter()
                .map(|s| unicode_width::UnicodeWidthStr::width(s.content.as_ref()))
                .sum();
            spans.extend(l.spans);
            spans.push(Span::raw(" ".repeat(usize::from(w).saturating_sub(used))));
            spans.push(Span::styled(" │ ", theme.hint));
            if let Some(r) = right.get(i) {
                spans.extend(r.spans.clone());
            }
            out.push(Row::Text(Line::from(spans)));
        }
    } else {
        for (i, a) in c.answers.iter().enumerate() {
            if i > 0 {
                out.push(Row::Text(Line::default()));
            }
            out.extend(column(a, width, i).into_iter().map(Row::Text));
        }
    }
    out
}

/// The comparison as Markdown, for `/export`.
pub fn markdown(c: &Compare) -> String {
    let mut md = format!("## Compare: {}\n\n", c.question.replace('\n', " "));
    for a in &c.answers {
        md.push_str(&format!("### {}\n\n{}\n\n", a.source, a.text));
        let record = record_line(a);
        if !record.is_empty() {
            md.push_str(&format!("_{record}_\n\n"));
        }
    }
    md
}
