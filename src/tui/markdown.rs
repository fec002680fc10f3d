//! A small Markdown → styled lines converter for answers (pulldown-cmark events → ratatui
//! spans): headings, paragraphs, bold, italics, inline code, fenced and indented code blocks,
//! nested bullet and numbered lists, block quotes, links and rules. Anything else is shown as its
//! text. A single newline inside a paragraph is kept as a line break, as chat answers mean it.
//!
//! It produces logical lines (with the prefix of their first row and of their wrapped rows);
//! [`super::wrap`] fits them to a width. Pure: no terminal, no IO.

use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span, Text};

use super::theme::Theme;

/// One logical line: what follows a line break in the source, before wrapping.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MdLine {
    /// Drawn before the first row (a list bullet, quote bars).
    pub prefix: Vec<Span<'static>>,
    /// Drawn before every wrapped row after the first (spaces under the bullet, quote bars).
    pub continuation: Vec<Span<'static>>,
    pub spans: Vec<Span<'static>>,
}

impl MdLine {
    /// A line of plain spans with no prefix.
    pub fn plain(spans: Vec<Span<'static>>) -> Self {
        Self {
            spans,
            ..Self::default()
        }
    }
}

/// A block that prefixes the lines inside it.
#[derive(Debug)]
enum Container {
    Quote,
    /// A list; `next` is the number of the next item of an ordered list.
    List {
        next: Option<u64>,
    },
    /// A list item; the marker is drawn on its first line only.
    Item {
        marker: String,
        first: bool,
    },
}

/// Converts `source` to logical lines styled with `theme`, the answer style as the base.
pub fn render(source: &str, theme: &Theme) -> Vec<MdLine> {
    let mut r = Renderer {
        theme,
        out: Vec::new(),
        spans: Vec::new(),
        styles: vec![theme.assistant_text],
        containers: Vec::new(),
        blank_before_next: false,
        blank_quotes: 0,
        in_code: false,
        links: Vec::new(),
        link_text: String::new(),
        table: None,
    };
    let options =
        pulldown_cmark::Options::ENABLE_TABLES | pulldown_cmark::Options::ENABLE_STRIKETHROUGH;
    for event in Parser::new_ext(source, options) {
        r.event(event);
    }
    r.flush(false);
    r.out
}

/// [`render`] as a ratatui `Text` without wrapping (prefixes included).
pub fn to_text(source: &str, theme: &Theme) -> Text<'static> {
    let lines: Vec<Line<'static>> = render(source, theme)
        .into_iter()
        .map(|l| {
            let mut spans = l.prefix;
            spans.extend(l.spans);
            Line::from(spans)
        })
        .collect();
    Text::from(lines)
}

struct Renderer<'t> {
    theme: &'t Theme,
    out: Vec<MdLine>,
    /// The spans of the line being built.
    spans: Vec<Span<'static>>,
    /// Inline styles, innermost last.
    styles: Vec<Style>,
    containers: Vec<Container>,
    /// A block ended: separate the next one with an empty line.
    blank_before_next: bool,
    /// How many quotes the block that ended was in: the separating line carries that many
    /// bars (a quote that starts after a paragraph gets no bar above it).
    blank_quotes: usize,
    in_code: bool,
    /// The destinations of the links being read, innermost last.
    links: Vec<String>,
    /// The text of the innermost link so far (to tell whether it shows its URL).
    link_text: String,
    /// A table being read: its rows of cells, the head's row count, the cell being read.
    table: Option<Table>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    head_rows: usize,
    cell: Option<String>,
}

impl Renderer<'_> {
    fn style(&self) -> Style {
        self.styles.last().copied().unwrap_or_default()
    }

    fn push_style(&mut self, f: impl FnOnce(Style) -> Style) {
        let s = f(self.style());
        self.styles.push(s);
    }

    fn pop_style(&mut self) {
        if self.styles.len() > 1 {
            self.styles.pop();
        }
    }

    fn text(&mut self, text: &str) {
        let style = self.style();
        for (i, part) in text.split('\n').enumerate() {
            if i > 0 {
                self.flush(true);
            }
            if !part.is_empty() {
                self.spans
                    .push(Span::styled(part.replace('\t', "    "), style));
            }
        }
    }

    /// Ends the current line. `force` keeps an empty line (inside code blocks, hard breaks).
    fn flush(&mut self, force: bool) {
        if self.spans.is_empty() && !force {
            return;
        }
        if self.blank_before_next && !self.out.is_empty() {
            // A separating line carries only the bars of the quotes both blocks are in.
            let quotes = self
                .containers
                .iter()
                .filter(|c| matches!(c, Container::Quote))
                .count()
                .min(self.blank_quotes);
            let bars: Vec<Span<'static>> = (0..quotes)
                .map(|_| Span::styled("│ ", self.theme.quote))
                .collect();
            self.out.push(MdLine {
                prefix: bars.clone(),
                continuation: bars,
                spans: Vec::new(),
            });
        }
        self.blank_before_next = false;
        let (prefix, continuation) = self.prefixes(true);
        let spans = std::mem::take(&mut self.spans);
        self.out.push(MdLine {
            prefix,
            continuation,
            spans,
        });
    }

    /// The prefixes of the next line; `consume` marks item markers as drawn.
    fn prefixes(&mut self, consume: bool) -> (Vec<Span<'static>>, Vec<Span<'static>>) {
        let quote = Span::styled("│ ", self.theme.quote);
        let mut first = Vec::new();
        let mut rest = Vec::new();
        for c in &mut self.containers {
            match c {
                Container::Quote => {
                    first.push(quote.clone());
                    rest.push(quote.clone());
                }
                Container::List { .. } => {}
                Container::Item {
                    marker,
                    first: is_first,
                } => {
                    let pad = " ".repeat(unicode_width::UnicodeWidthStr::width(marker.as_str()));
                    if *is_first {
                        first.push(Span::styled(marker.clone(), self.theme.list_marker));
                        if consume {
                            *is_first = false;
                        }
                    } else {
                        first.push(Span::raw(pad.clone()));
                    }
                    rest.push(Span::raw(pad));
                }
            }
        }
        (first, rest)
    }

    fn end_block(&mut self) {
        self.flush(false);
        self.separate();
    }

    /// The next block is separated by an empty line (with the bars of the quotes this one is
    /// in).
    fn separate(&mut self) {
        self.blank_before_next = true;
        self.blank_quotes = self
            .containers
            .iter()
            .filter(|c| matches!(c, Container::Quote))
            .count();
    }

    fn event(&mut self, event: Event<'_>) {
        if let Some(table) = &mut self.table {
            match &event {
                Event::Text(t) | Event::Code(t) => {
                    if let Some(cell) = &mut table.cell {
                        cell.push_str(t);
                    }
                    return;
                }
                Event::Start(Tag::TableCell) => {
                    table.cell = Some(String::new());
                    return;
                }
                Event::End(TagEnd::TableCell) => {
                    let cell = table.cell.take().unwrap_or_default();
                    if let Some(row) = table.rows.last_mut() {
                        row.push(cell);
                    }
                    return;
                }
                Event::Start(Tag::TableHead) | Event::Start(Tag::TableRow) => {
                    table.rows.push(Vec::new());
                    return;
                }
                Event::End(TagEnd::TableHead) => {
                    table.head_rows = table.rows.len();
                    return;
                }
                Event::End(TagEnd::Table) => {
                    let table = self.table.take().unwrap_or_default();
                    self.draw_table(&table);
                    return;
                }
                _ => {}
            }
        }
        if !self.links.is_empty() {
            if let Event::Text(t) | Event::Code(t) = &event {
                self.link_text.push_str(t);
            }
        }
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(t) => self.text(&t),
            Event::Code(t) => {
                let style = self.style().patch(self.theme.code);
                self.spans.push(Span::styled(t.to_string(), style));
            }
            Event::Html(t)
            | Event::InlineHtml(t)
            | Event::InlineMath(t)
            | Event::DisplayMath(t) => self.text(&t),
            Event::FootnoteReference(t) => self.text(&format!("[^{t}]")),
            Event::SoftBreak | Event::HardBreak => self.flush(true),
            Event::Rule => {
                self.flush(false);
                if !self.out.is_empty() {
                    self.separate();
                }
                self.spans
                    .push(Span::styled("─".repeat(24), self.theme.list_marker));
                self.end_block();
            }
            Event::TaskListMarker(done) => self.text(if done { "[x] " } else { "[ ] " }),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph => self.flush(false),
            Tag::Heading { .. } => {
                self.flush(false);
                if !self.out.is_empty() {
                    self.separate();
                }
                let heading = self.theme.heading;
                self.push_style(|s| s.patch(heading));
            }
            Tag::BlockQuote(_) => {
                self.flush(false);
                self.containers.push(Container::Quote);
                let quote = self.theme.quote;
                self.push_style(|s| s.patch(quote));
            }
            Tag::CodeBlock(kind) => {
                self.flush(false);
                if !self.out.is_empty() {
                    self.separate();
                }
                if let CodeBlockKind::Fenced(lang) = kind {
                    if !lang.is_empty() {
                        let hint = self.theme.hint;
                        self.spans.push(Span::styled(format!("{lang}:"), hint));
                        self.flush(false);
                    }
                }
                self.in_code = true;
                let code = self.theme.code_block;
                self.push_style(|_| code);
            }
            Tag::List(start) => {
                self.flush(false);
                if self.list_depth() == 0 && !self.out.is_empty() {
                    self.separate();
                }
                self.containers.push(Container::List { next: start });
            }
            Tag::Item => {
                self.flush(false);
                let depth = self.list_depth();
                let marker = match self.containers.last_mut() {
                    Some(Container::List { next: Some(n) }) => {
                        let m = format!("{n}. ");
                        *n += 1;
                        m
                    }
                    _ => match depth {
                        0 | 1 => "• ".to_string(),
                        2 => "◦ ".to_string(),
                        _ => "▪ ".to_string(),
                    },
                };
                self.containers.push(Container::Item {
                    marker,
                    first: true,
                });
            }
            Tag::Emphasis => self.push_style(|s| s.add_modifier(Modifier::ITALIC)),
            Tag::Strong => self.push_style(|s| s.add_modifier(Modifier::BOLD)),
            Tag::Strikethrough => self.push_style(|s| s.add_modifier(Modifier::CROSSED_OUT)),
            Tag::Link { dest_url, .. } => {
                self.links.push(dest_url.to_string());
                self.link_text.clear();
                let link = self.theme.link;
                self.push_style(|s| s.patch(link));
            }
            Tag::Table(_) => {
                self.flush(false);
                self.table = Some(Table::default());
            }
            Tag::Image { .. } => {
                let label = self.theme.image_label;
                self.push_style(|s| s.patch(label));
            }
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => self.end_block(),
            TagEnd::Heading(_) => {
                self.pop_style();
                self.end_block();
            }
            TagEnd::BlockQuote(_) => {
                self.flush(false);
                self.pop_style();
                if matches!(self.containers.last(), Some(Container::Quote)) {
                    self.containers.pop();
                }
                self.separate();
            }
            TagEnd::CodeBlock => {
                // The code text ends with a newline, which already ended its last line.
                if !self.spans.is_empty() {
                    self.flush(false);
                }
                self.in_code = false;
                self.pop_style();
                self.separate();
            }
            TagEnd::List(_) => {
                self.flush(false);
                if matches!(self.containers.last(), Some(Container::List { .. })) {
                    self.containers.pop();
                }
                if self.list_depth() == 0 {
                    self.separate();
                }
            }
            TagEnd::Item => {
                self.flush(false);
                if matches!(self.containers.last(), Some(Container::Item { .. })) {
                    self.containers.pop();
                }
                // Loose items end with a paragraph; tight lists stay tight.
                self.blank_before_next = false;
            }
            TagEnd::Link => {
                self.pop_style();
                // The URL stays visible unless the text already is it.
                if let Some(url) = self.links.pop() {
                    let text = std::mem::take(&mut self.link_text);
                    if !url.is_empty() && text.trim() != url && !url.starts_with('#') {
                        self.spans
                            .push(Span::styled(format!(" ({url})"), self.theme.hint));
                    }
                }
            }
            TagEnd::Emphasis | TagEnd::Strong | TagEnd::Strikethrough | TagEnd::Image => {
                self.pop_style()
            }
            _ => {}
        }
    }

    /// A table as text: columns padded to their widest cell, `│` between them, a rule under
    /// the head.
    fn draw_table(&mut self, table: &Table) {
        use unicode_width::UnicodeWidthStr;
        let columns = table.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in &table.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.trim().width());
            }
        }
        if !self.out.is_empty() {
            self.separate();
        }
        let border = self.theme.quote;
        for (r, row) in table.rows.iter().enumerate() {
            let mut spans = Vec::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(|c| c.trim()).unwrap_or("");
                spans.push(Span::styled(if i == 0 { "│ " } else { " │ " }, border));
                let style = if r < table.head_rows {
                    self.style().add_modifier(Modifier::BOLD)
                } else {
                    self.style()
                };
                spans.push(Span::styled(
                    format!("{cell}{}", " ".repeat(width - cell.width())),
                    style,
                ));
            }
            spans.push(Span::styled(" │", border));
            self.spans = spans;
            self.flush(false);
            if r + 1 == table.head_rows {
                let rule: String = widths
                    .iter()
                    .map(|w| "─".repeat(w + 2))
                    .collect::<Vec<_>>()
                    .join("┼");
                self.spans = vec![Span::styled(format!("├{rule}┤"), border)];
                self.flush(false);
            }
        }
        self.separate();
    }

    fn list_depth(&self) -> usize {
        self.containers
            .iter()
            .filter(|c| matches!(c, Container::List { .. }))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(source: &str) -> Vec<String> {
        render(source, &Theme::default())
            .iter()
            .map(|l| {
                l.prefix
                    .iter()
                    .chain(&l.spans)
                    .map(|s| s.content.as_ref())
                    .collect::<String>()
            })
            .collect()
    }

    #[test]
    fn tables_are_drawn_as_tables() {
        assert_eq!(
            plain("Findings:\n\n| Organ | Finding |\n|---|---|\n| Lung | clear |\n| Heart | normal size |\n\nEnd."),
            [
                "Findings:",
                "",
                "│ Organ │ Finding     │",
                "├───────┼─────────────┤",
                "│ Lung  │ clear       │",
                "│ Heart │ normal size │",
                "",
                "End."
            ]
        );
    }

    #[test]
    fn links_keep_their_url() {
        assert_eq!(
            plain("See [the guideline](https://example.org/g) and <https://example.org/x>."),
            ["See the guideline (https://example.org/g) and https://example.org/x."]
        );
    }

    #[test]
    fn a_quote_after_a_paragraph_has_no_stray_bar_above_it() {
        assert_eq!(
            plain("Impression:\n\n> No acute process.\n>\n> Follow up.\n\nDone."),
            [
                "Impression:",
                "",
                "│ No acute process.",
                "│ ",
                "│ Follow up.",
                "",
                "Done."
            ]
        );
    }

    #[test]
    fn paragraphs_headings_and_breaks() {
        assert_eq!(
            plain("# Findings\nNo fracture.\nNormal heart size.\n\nDone."),
            [
                "Findings",
                "",
                "No fracture.",
                "Normal heart size.",
                "",
                "Done."
            ]
        );
    }

    #[test]
    fn lists_number_nest_and_stay_tight() {
        assert_eq!(
            plain("Signs:\n\n1. edema\n2. effusion\n   - left\n   - right\n\nEnd"),
            [
                "Signs:",
                "",
                "1. edema",
                "2. effusion",
                "   ◦ left",
                "   ◦ right",
                "",
                "End"
            ]
        );
    }

    #[test]
    fn code_blocks_keep_lines_and_indentation() {
        assert_eq!(
            plain("Run:\n\n```sh\nls\n  -l\n\nx\n```\nafter"),
            ["Run:", "", "sh:", "ls", "  -l", "", "x", "", "after"]
        );
    }

    #[test]
    fn inline_styles_are_applied() {
        let theme = Theme::default();
        let lines = render("a **b** *c* `d`", &theme);
        let spans = &lines[0].spans;
        assert_eq!(spans[1].content, "b");
        assert!(spans[1].style.add_modifier.contains(Modifier::BOLD));
        assert!(spans[3].style.add_modifier.contains(Modifier::ITALIC));
        assert_eq!(spans[5].style.fg, theme.code.fg);
    }

    #[test]
    fn quotes_prefix_every_line_and_unfinished_input_is_fine() {
        assert_eq!(plain("> a\n> b"), ["│ a", "│ b"]);
        assert_eq!(plain("```\nunclosed **x"), ["unclosed **x"]);
        assert_eq!(plain("**bold without end"), ["**bold without end"]);
        assert!(plain("").is_empty());
    }
}
