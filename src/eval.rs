//! The paper's benchmark as the authors run it (FreedomIntelligence/HuatuoGPT-Vision eval.py
//! and scorer.py, commit f699d88): their data format, their prompt, their answer extraction
//! and their accuracies. Pure functions over plain data; `cmd/eval.rs` runs the model.
//!
//! - Data: `medical_multimodel_evaluation_data.json`, a list of items with `question`,
//!   `options` (a list, or a string holding a Python list), `answer` (the right option's
//!   text; `"?"`: none is right), `image` (paths relative to the file's folder), `dataset`,
//!   `subset` and an optional `question_type`.
//! - Prompt (eval.py `llava_prompt`): `"{question}\n{A. …\nB. …}\nAnswer with the option's
//!   letter from the given choices directly."`, letters A to K (more options are dropped, as
//!   `zip` drops them).
//! - Scored items (scorer.py `score_mix_llava`): not `question_type == "open"`, options not
//!   empty, each `test_id` once.
//! - Extraction (`match_choice3`): the first match of
//!   `(is |是|\*|\W|\ |\(|为|^|'|\"|#)(?![aA] )([a-nA-N])(\W|$)` (re.S), its group 2,
//!   compared case-sensitively with the gold letter. The authors' fallbacks after a failed
//!   match crash on their own data, so no match is wrong. Python's `re` has lookahead and its
//!   own Unicode `\w`; Rust's `regex` has neither, so the match is ported by hand (below) with
//!   Python's definition of a word character.
//! - Accuracy per dataset, per `{dataset}_{subset}` (non-empty subsets), and the total as the
//!   micro-average over all scored items.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Letters of the options, as eval.py's `opt_title`.
pub const LETTERS: [char; 11] = ['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K'];

/// The accuracies the paper publishes (README of HuatuoGPT-Vision, arXiv 2406.19280), in the
/// table's order: (name, data file's dataset name, 7B, 34B).
pub const PUBLISHED: [(&str, &str, f64, f64); 6] = [
    ("VQA-RAD", "VQA-RAD_test", 63.7, 68.1),
    ("SLAKE", "SLAKE_test", 76.2, 76.9),
    ("PathVQA", "PathVQA_test", 57.9, 63.5),
    ("PMC-VQA", "PMC-VQA_test", 54.3, 58.2),
    ("OmniMedVQA", "OmniMedVQA", 74.0, 76.9),
    ("MMMU H&M", "MMMU_Medical_Validation", 50.6, 54.4),
];

/// One item of the data file.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Position in the data file (0-based).
    pub index: usize,
    pub question: String,
    pub options: Vec<String>,
    pub answer: String,
    pub images: Vec<String>,
    pub dataset: String,
    pub subset: String,
    pub question_type: Option<String>,
    /// Every field as the file has it (written back with each result).
    pub fields: Map<String, Value>,
}

impl Item {
    /// Reads one item; `options` may be a string holding a Python list.
    pub fn from_value(index: usize, value: &Value) -> Result<Self, String> {
        let Value::Object(fields) = value else {
            return Err(format!("item {index}: not a JSON object"));
        };
        let text = |key: &str| -> Result<String, String> {
            match fields.get(key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Ok(other.to_string()),
            }
        };
        let options = match fields.get("options") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => parse_options(v).map_err(|e| format!("item {index}: options: {e}"))?,
        };
        let images = match fields.get("image") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("item {index}: image must be a list of paths"))?,
            Some(_) => return Err(format!("item {index}: image must be a list of paths")),
        };
        Ok(Self {
            index,
            question: text("question")?,
            options,
            answer: text("answer")?,
            images,
            dataset: text("dataset")?,
            subset: text("subset")?,
            question_type: fields
                .get("question_type")
                .and_then(Value::as_str)
                .map(str::to_string),
            fields: fields.clone(),
        })
    }

    /// Whether the authors' scorer counts it: not open, with options.
    pub fn is_scored(&self) -> bool {
        self.question_type.as_deref() != Some("open") && !self.options.is_empty()
    }

    /// eval.py's prompt.
    pub fn prompt(&self) -> String {
        prompt(&self.question, &self.options)
    }

    /// The right option's letter; `None` for `"?"` (no option is right) or an answer that is
    /// not one of the first 11 options.
    pub fn gold(&self) -> Option<char> {
        gold(&self.options, &self.answer)
    }
}

/// eval.py's `llava_prompt`.
pub fn prompt(question: &str, options: &[String]) -> String {
    let options: Vec<String> = LETTERS
        .iter()
        .zip(options)
        .map(|(l, o)| format!("{l}. {o}"))
        .collect();
    format!(
        "{question}\n{}\nAnswer with the option's letter from the given choices directly.",
        options.join("\n")
    )
}

/// scorer.py: `opt_title[options.index(answer)]`, with `"?"` never right.
pub fn gold(options: &[String], answer: &str) -> Option<char> {
    if answer == "?" {
        return None;
    }
    options
        .iter()
        .position(|o| o == answer)
        .and_then(|i| LETTERS.get(i).copied())
}

/// `options` as a list of texts: a JSON list, or a string holding a Python list literal
/// (`ast.literal_eval`), as the authors' data has both.
pub fn parse_options(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Array(list) => Ok(list
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()),
        Value::String(s) => parse_python_list(s),
        other => Err(format!("expected a list, got {other}")),
    }
}

/// A Python list literal of strings (and numbers, kept as their text), as `ast.literal_eval`
/// reads it: single or double quotes, escapes, adjacent literals concatenated.
pub fn parse_python_list(text: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    let close = match chars.get(i) {
        Some('[') => ']',
        Some('(') => ')',
        _ => return Err(format!("not a Python list: {}", short(text))),
    };
    i += 1;
    let mut out = Vec::new();
    loop {
        skip_ws(&mut i);
        match chars.get(i) {
            Some(c) if *c == close => {
                i += 1;
                break;
            }
            None => return Err(format!("unterminated list: {}", short(text))),
            _ => {}
        }
        // One element: string literals (concatenated) or a number.
        let mut value = String::new();
        let mut any = false;
        loop {
            skip_ws(&mut i);
            let mut j = i;
            // String prefixes (r, u, b and their combinations).
            let mut raw = false;
            while j < chars.len() && matches!(chars[j], 'r' | 'R' | 'u' | 'U' | 'b' | 'B') {
                raw |= matches!(chars[j], 'r' | 'R');
                j += 1;
            }
            let Some(&quote) = chars.get(j).filter(|c| **c == '\'' || **c == '"') else {
                break;
            };
            let triple = chars.get(j + 1) == Some(&quote) && chars.get(j + 2) == Some(&quote);
            j += if triple { 3 } else { 1 };
            loop {
                let Some(&c) = chars.get(j) else {
                    return Err(format!("unterminated string in {}", short(text)));
                };
                if c == quote
                    && (!triple
                        || (chars.get(j + 1) == Some(&quote) && chars.get(j + 2) == Some(&quote)))
                {
                    j += if triple { 3 } else { 1 };
                    break;
                }
                if c == '\\' && !raw {
                    let (s, n) = escape(&chars[j + 1..])?;
                    value.push_str(&s);
                    j += 1 + n;
                    continue;
                }
                if c == '\\' && raw {
                    value.push(c);
                    if let Some(&next) = chars.get(j + 1) {
                        value.push(next);
                        j += 2;
                        continue;
                    }
                }
                value.push(c);
                j += 1;
            }
            i = j;
            any = true;
        }
        if !any {
            let start = i;
            while i < chars.len() && !matches!(chars[i], ',' | ']' | ')') {
                i += 1;
            }
            let token: String = chars[start..i]
                .iter()
                .collect::<String>()
                .trim()
                .to_string();
            if token.is_empty() || token.parse::<f64>().is_err() {
                return Err(format!("not a list of strings: {}", short(text)));
            }
            value = token;
        }
        out.push(value);
        skip_ws(&mut i);
        match chars.get(i) {
            Some(',') => i += 1,
            Some(c) if *c == close => {}
            _ => return Err(format!("expected , or {close} in {}", short(text))),
        }
    }
    skip_ws(&mut i);
    if i != chars.len() {
        return Err(format!("text after the list: {}", short(text)));
    }
    Ok(out)
}

/// One escape sequence after a backslash: the text and the characters it used.
fn escape(rest: &[char]) -> Result<(String, usize), String> {
    let hex = |n: usize| -> Result<(String, usize), String> {
        let digits: String = rest.get(1..=n).ok_or("short escape")?.iter().collect();
        let code =
            u32::from_str_radix(&digits, 16).map_err(|_| format!("bad escape \\{digits}"))?;
        let c = char::from_u32(code).ok_or(format!("bad code point {code:x}"))?;
        Ok((c.to_string(), n + 1))
    };
    let Some(&c) = rest.first() else {
        return Err("a backslash at the end".into());
    };
    Ok(match c {
        '\n' => (String::new(), 1),
        '\\' | '\'' | '"' => (c.to_string(), 1),
        'n' => ("\n".into(), 1),
        't' => ("\t".into(), 1),
        'r' => ("\r".into(), 1),
        'a' => ("\u{7}".into(), 1),
        'b' => ("\u{8}".into(), 1),
        'f' => ("\u{c}".into(), 1),
        'v' => ("\u{b}".into(), 1),
        '0'..='7' => {
            let digits: String = rest.iter().take(3).take_while(|d| d.is_digit(8)).collect();
            let code = u32::from_str_radix(&digits, 8).map_err(|e| e.to_string())?;
            (
                char::from_u32(code).unwrap_or('\u{fffd}').to_string(),
                digits.len(),
            )
        }
        'x' => hex(2)?,
        'u' => hex(4)?,
        'U' => hex(8)?,
        // Python keeps an unknown escape as it is.
        other => (format!("\\{other}"), 1),
    })
}

fn short(text: &str) -> String {
    let s: String = text.chars().take(60).collect();
    if s.len() < text.len() {
        format!("{s}…")
    } else {
        s
    }
}

/// Python's `\w` for `str` patterns: letters (L*), numbers (Nd, Nl, No) and `_`.
fn is_word(c: char) -> bool {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    c == '_'
        || matches!(
            get_general_category(c),
            G::UppercaseLetter
                | G::LowercaseLetter
                | G::TitlecaseLetter
                | G::ModifierLetter
                | G::OtherLetter
                | G::DecimalNumber
                | G::LetterNumber
                | G::OtherNumber
        )
}

/// scorer.py `match_choice3`'s regular expression: the letter of its first match, or `None`.
///
/// `(is |是|\*|\W|\ |\(|为|^|'|\"|#)(?![aA] )([abcdefghijklmnABCDEFGHIJKLMN])(\W|$)` with
/// `re.S`, leftmost match first: at each start, each alternative of the first group in
/// order, then the lookahead, the letter and a non-word character or the end.
pub fn match_choice3(text: &str) -> Option<char> {
    let c: Vec<char> = text.chars().collect();
    let n = c.len();
    let at = |i: usize| c.get(i).copied();
    let letter = |ch: char| matches!(ch, 'a'..='n' | 'A'..='N');
    // After the first group ends at `q`: the lookahead, the letter, then \W or the end.
    let rest = |q: usize| -> Option<char> {
        if matches!(at(q), Some('a' | 'A')) && at(q + 1) == Some(' ') {
            return None;
        }
        let l = at(q).filter(|&ch| letter(ch))?;
        match at(q + 1) {
            None => Some(l),
            Some(ch) if !is_word(ch) => Some(l),
            _ => None,
        }
    };
    for s in 0..=n {
        // The alternatives in order, each giving where the first group ends.
        let mut ends: Vec<usize> = Vec::with_capacity(3);
        if at(s) == Some('i') && at(s + 1) == Some('s') && at(s + 2) == Some(' ') {
            ends.push(s + 3);
        }
        if let Some(ch) = at(s) {
            // 是, *, \W, space, (, 为, ', ", #: one character each.
            if matches!(ch, '是' | '*' | ' ' | '(' | '为' | '\'' | '"' | '#') || !is_word(ch) {
                ends.push(s + 1);
            }
        }
        if s == 0 {
            ends.push(0); // ^
        }
        if let Some(l) = ends.into_iter().find_map(rest) {
            return Some(l);
        }
    }
    None
}

/// Correct and scored counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub correct: usize,
    pub total: usize,
}

impl Tally {
    pub fn add(&mut self, correct: bool) {
        self.total += 1;
        self.correct += usize::from(correct);
    }

    /// In percent (0 when nothing was scored).
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.correct as f64 / self.total as f64
        }
    }

    fn json(&self) -> Value {
        json!({"correct": self.correct, "total": self.total, "accuracy": round4(self.accuracy())})
    }
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Accuracies as the authors' scorer counts them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub datasets: BTreeMap<String, Tally>,
    /// `{dataset}_{subset}` for non-empty subsets.
    pub subsets: BTreeMap<String, Tally>,
    pub total: Tally,
}

impl Summary {
    pub fn add(&mut self, dataset: &str, subset: &str, correct: bool) {
        self.datasets
            .entry(dataset.to_string())
            .or_default()
            .add(correct);
        if !subset.is_empty() {
            self.subsets
                .entry(format!("{dataset}_{subset}"))
                .or_default()
                .add(correct);
        }
        self.total.add(correct);
    }

    /// `datasets`, `subsets` and `total`, each `{correct, total, accuracy}` (percent).
    pub fn json(&self) -> Value {
        let map = |m: &BTreeMap<String, Tally>| -> Value {
            Value::Object(m.iter().map(|(k, t)| (k.clone(), t.json())).collect())
        };
        json!({"datasets": map(&self.datasets), "subsets": map(&self.subsets), "total": self.total.json()})
    }

    /// lmms-eval's `results.json` shape: `{"results": {dataset: {"acc,none": fraction}}}`.
    pub fn lmms_results(&self) -> Value {
        let mut results = Map::new();
        for (k, t) in self.datasets.iter().chain(self.subsets.iter()) {
            results.insert(
                k.clone(),
                json!({"acc,none": round4(t.accuracy() / 100.0), "alias": k, "samples": t.total}),
            );
        }
        results.insert(
            "total".into(),
            json!({"acc,none": round4(self.total.accuracy() / 100.0), "alias": "total", "samples": self.total.total}),
        );
        json!({"results": results})
    }

    /// A Markdown table: accuracy per dataset beside the published 7B and 34B numbers.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| dataset | items | accuracy | published 7B | published 34B |\n|---|---:|---:|---:|---:|\n",
        );
        let mut shown = Vec::new();
        for (name, key, b7, b34) in PUBLISHED {
            if let Some(t) = self.datasets.get(key) {
                out.push_str(&format!(
                    "| {name} | {} | {:.1} | {b7:.1} | {b34:.1} |\n",
                    t.total,
                    t.accuracy()
                ));
                shown.push(key);
            }
        }
        for (key, t) in &self.datasets {
            if !shown.contains(&key.as_str()) {
                out.push_str(&format!(
                    "| {key} | {} | {:.1} | | |\n",
                    t.total,
                    t.accuracy()
                ));
            }
        }
        out.push_str(&format!(
            "| **total** | {} | {:.1} | | |\n",
            self.total.total,
            self.total.accuracy()
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_eval_py_s() {
        let options = vec!["lung".to_string(), "heart".to_string()];
        assert_eq!(
            prompt("Which organ?", &options),
            "Which organ?\nA. lung\nB. heart\nAnswer with the option's letter from the given choices directly."
        );
        let many: Vec<String> = (0..13).map(|i| i.to_string()).collect();
        assert!(prompt("q", &many).contains("K. 10\nAnswer"));
        assert_eq!(gold(&many, "10"), Some('K'));
        assert_eq!(gold(&many, "11"), None);
        assert_eq!(gold(&options, "?"), None);
        assert_eq!(gold(&options, "heart"), Some('B'));
    }

    #[test]
    fn python_list_literals_parse_as_ast_literal_eval() {
        assert_eq!(
            parse_python_list(r#"['a', "b's", 'c\'d', '\u4e2d\n', 'x' 'y', 3]"#).expect("parse"),
            ["a", "b's", "c'd", "中\n", "xy", "3"]
        );
        assert_eq!(
            parse_python_list("[]").expect("empty"),
            Vec::<String>::new()
        );
        assert_eq!(parse_python_list("['a',]").expect("trailing"), ["a"]);
        assert!(parse_python_list("['a'").is_err());
        assert!(parse_python_list("a, b").is_err());
    }

    /// Cases worked through by hand from the regular expression's semantics; the Python
    /// scorer's own answers on a larger set are in tests/fixtures/eval (tests/eval.rs).
    #[test]
    fn extraction_follows_match_choice3() {
        let cases = [
            ("B", Some('B')),
            ("(c)", Some('c')),
            ("The answer is C.", Some('C')),
            ("A lung", None),
            ("a lung", None),
            // "I" is a letter from A to N followed by a space: the scorer reads it.
            ("I think a lung", Some('I')),
            ("答案是B", Some('B')),
            ("**D**", Some('D')),
            ("is a", Some('a')),
            ("no letter here", None),
            ("", None),
            ("Option: E\n", Some('E')),
            ("#F", Some('F')),
            ("x_B_", None),
        ];
        for (text, want) in cases {
            assert_eq!(match_choice3(text), want, "{text:?}");
        }
    }

    #[test]
    fn summaries_count_as_the_authors() {
        let mut s = Summary::default();
        s.add("SLAKE_test", "", true);
        s.add("SLAKE_test", "", false);
        s.add("OmniMedVQA", "X-Ray", true);
        assert_eq!(
            s.datasets["SLAKE_test"],
            Tally {
                correct: 1,
                total: 2
            }
        );
        assert_eq!(s.subsets.len(), 1);
        assert_eq!(
            s.total,
            Tally {
                correct: 2,
                total: 3
            }
        );
        let v = s.json();
        assert_eq!(v["total"]["accuracy"], 66.6667);
        assert_eq!(s.lmms_results()["results"]["SLAKE_test"]["acc,none"], 0.5);
        assert!(s.markdown().contains("| SLAKE | 2 | 50.0 | 76.2 | 76.9 |"));
    }
}
