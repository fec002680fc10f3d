//! Where huatuo keeps its own files, and the user's settings file. The only module that reads
//! `HUATUO_*` environment variables (the hub reads the Hugging Face ones).
//!
//! - config dir: `HUATUO_CONFIG_DIR`, else the platform's (`~/.config/huatuo` on Linux):
//!   `config.toml`, `themes/*.toml`;
//! - data dir: `HUATUO_DATA_DIR`, else the platform's (`~/.local/share/huatuo`): `sessions/`,
//!   logs;
//! - cache dir: `HUATUO_CACHE_DIR`, else the platform's (`~/.cache/huatuo`): quantized weights
//!   converted from the hub's shards (`quant/`), safe to delete.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::protocol::SamplingOverrides;

/// huatuo's own directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    pub config: PathBuf,
    pub data: PathBuf,
    /// Rebuildable files: quantized weights (`quant/`).
    pub cache: PathBuf,
}

impl Dirs {
    /// Resolves the directories from the environment and the platform conventions.
    pub fn from_env() -> anyhow::Result<Self> {
        let project = directories::ProjectDirs::from("", "", "huatuo");
        let pick = |var: &str, platform: Option<PathBuf>| -> anyhow::Result<PathBuf> {
            match std::env::var_os(var) {
                Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
                _ => platform.ok_or_else(|| {
                    anyhow::anyhow!("cannot find a home directory: set {var} to a directory")
                }),
            }
        };
        Ok(Self {
            config: pick(
                "HUATUO_CONFIG_DIR",
                project.as_ref().map(|p| p.config_dir().to_path_buf()),
            )?,
            data: pick(
                "HUATUO_DATA_DIR",
                project.as_ref().map(|p| p.data_dir().to_path_buf()),
            )?,
            cache: pick(
                "HUATUO_CACHE_DIR",
                project.as_ref().map(|p| p.cache_dir().to_path_buf()),
            )?,
        })
    }

    /// Where `--session` / `/save` conversations are kept.
    pub fn sessions(&self) -> PathBuf {
        self.data.join("sessions")
    }

    /// Where quantized weights converted from the hub's bf16 shards are kept.
    pub fn quant_cache(&self) -> PathBuf {
        self.cache.join("quant")
    }

    /// The user's settings file.
    pub fn config_file(&self) -> PathBuf {
        self.config.join("config.toml")
    }
}

/// `config.toml`: defaults that flags override. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Default model: `7b`, `34b`, a repo id or a directory.
    pub model: Option<String>,
    /// Theme name (built in: dark, light, high-contrast; or a file in themes/).
    pub theme: Option<String>,
    /// Weight quantization (issue 6).
    pub quant: Option<String>,
    /// An OpenAI-compatible server to answer instead of a local model (`--endpoint`).
    pub endpoint: Option<String>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub max_new_tokens: Option<usize>,
    pub seed: Option<u64>,
}

impl Settings {
    /// The sampling settings this file sets (flags go over them).
    pub fn sampling(&self) -> SamplingOverrides {
        SamplingOverrides {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
            ..SamplingOverrides::default()
        }
    }

    /// Reads `path`; a missing file is the defaults, a malformed one an error naming it.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "invalid {}: {}",
                    path.display(),
                    describe_toml_error(&text, &e)
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }
}

/// A config.toml error as one line naming where it is: `line N, key K: message`.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().to_string();
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default();
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match key {
        Some(key) => format!("line {line_no}, key {key}: {}", e.message()),
        None => format!("line {line_no}: {}", e.message()),
    }
}

/// `HUATUO_KERNELS`: the CPU kernel set for this process (`scalar`, `avx2` or `avx512`; unset,
/// the best this CPU runs), chosen before any kernel runs. A set the CPU lacks is an error.
pub fn select_kernels() -> anyhow::Result<crate::kernels::Isa> {
    let value = std::env::var("HUATUO_KERNELS").ok();
    crate::kernels::select(value.as_deref()).map_err(anyhow::Error::msg)
}

/// `HUATUO_TEST_TOKEN_DELAY_MS`: how long every generated token takes at least, so the test
/// suite can interrupt an answer midway in the real binary. Only builds with the
/// `test-support` feature read it.
#[cfg(feature = "test-support")]
pub fn test_token_delay() -> Option<std::time::Duration> {
    std::env::var("HUATUO_TEST_TOKEN_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_line_and_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "model = \"7b\"\ntemperature = \"hot\"\n").expect("write");
        let e = Settings::load(&p).expect_err("bad type").to_string();
        assert!(e.contains("line 2, key temperature"), "{e}");
        assert!(e.contains("invalid type: string \"hot\""), "{e}");
        assert_eq!(e.matches("config.toml").count(), 1, "the path once: {e}");
    }

    #[test]
    fn settings_parse_and_reject_unknown_keys() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("config.toml");
        assert_eq!(
            Settings::load(&p).expect("missing is default"),
            Settings::default()
        );
        std::fs::write(&p, "model = \"34b\"\ntemperature = 0.0\n").expect("write");
        let s = Settings::load(&p).expect("parse");
        assert_eq!(s.model.as_deref(), Some("34b"));
        assert_eq!(s.temperature, Some(0.0));
        std::fs::write(&p, "modle = \"34b\"\n").expect("write");
        let err = Settings::load(&p).expect_err("typo");
        assert!(err.to_string().contains("config.toml"), "{err}");
    }
}
