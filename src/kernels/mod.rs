//! huatuo's own CPU kernels (issue 21), as ggml keeps them: one module per operation, whose
//! `mod.rs` is the safe entry point (shapes, tiling, threading) and whose per-instruction-set
//! files (`scalar.rs`, `x86_avx2.rs`, `x86_avx512.rs`, later `aarch64_neon.rs`) hold the inner
//! loops, gated by `cfg(target_arch)`. Every SIMD variant has a scalar twin with the same
//! signature, and the tests compare each variant this CPU runs against it.
//!
//! The instruction set is chosen once per process ([`isa`]): the best the CPU has, or the one
//! `HUATUO_KERNELS=scalar|avx2|avx512` names (read by the binary and passed to [`select`]; this
//! module never reads the environment). Operations call [`isa`], a load of a static, instead
//! of testing CPU features on every forward pass.
//!
//! Shared pieces live in their own files, never in another kernel's: [`pool`] (work over
//! candle's thread pool, each worker given its own `&mut` part), [`rows`] (activation rows
//! quantized block by block) and [`softmax`].
//!
//! The operations: [`q4k`] (interleaved q4_K), [`q6k`], [`q8_0`], [`kv_attention`] (a decode
//! step over the f16 KV cache) and [`vit_attention`] (the vision tower's), with the softmax
//! both attention kernels share ([`softmax`]). Every one of them has AVX-512 loops, each kept
//! because it measured faster than AVX2's on the same CPU (`examples/kernels`, BENCHMARKS.md):
//! q4_K's 16-row VNNI tiles at prefill 2.2× the four-row loop, the attention kernels 1.25×
//! (vision) and 1.3–1.4× (decode). The softmax stays on AVX2's eight lanes.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

pub mod kv_attention;
pub(crate) mod pool;
pub mod q4k;
pub mod q6k;
pub mod q8_0;
pub(crate) mod rows;
pub(crate) mod softmax;
pub mod vit_attention;

/// The instruction sets huatuo has kernels for, in order: each one's CPU has the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    /// Plain Rust: the reference every other variant is tested against, and what runs where
    /// huatuo has no SIMD kernel (candle's own kernels take over the hot paths there).
    Scalar,
    /// x86-64 with AVX2, FMA and F16C (Intel since Haswell, AMD since Zen).
    Avx2,
    /// AVX2's, plus AVX-512 F, BW, VL and VNNI (Intel since Ice Lake, AMD since Zen 4): the
    /// int8 dot products on `vpdpbusd`.
    Avx512,
}

impl Isa {
    /// Every set, in order.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The CPU features the set needs, as `is_x86_feature_detected!` names them.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Isa::Scalar => &[],
            Isa::Avx2 => &["avx2", "fma", "f16c"],
            Isa::Avx512 => &[
                "avx2",
                "fma",
                "f16c",
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512vnni",
            ],
        }
    }

    /// The features of [`Isa::features`] this CPU lacks.
    pub fn missing(self) -> Vec<&'static str> {
        self.features()
            .iter()
            .copied()
            .filter(|f| !has_feature(f))
            .collect()
    }

    /// Whether this CPU runs the set.
    pub fn supported(self) -> bool {
        self.missing().is_empty()
    }

    /// The best set this CPU runs.
    pub fn detected() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|i| i.supported())
            .unwrap_or(Isa::Scalar)
    }

    /// Every set this CPU runs (the variants a kernel test can compare).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.supported()).collect()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown kernel set {s:?}: use scalar, avx2 or avx512"))
    }
}

#[cfg(target_arch = "x86_64")]
fn has_feature(name: &str) -> bool {
    match name {
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        "f16c" => std::arch::is_x86_feature_detected!("f16c"),
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
        "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
        "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn has_feature(_: &str) -> bool {
    false
}

/// The CPU features kernels care about that this CPU has (for `huatuo info` and benchmark
/// reports: a number means little without them).
pub fn cpu_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        [
            ("sse4.2", has!("sse4.2")),
            ("avx", has!("avx")),
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("f16c", has!("f16c")),
            ("avxvnni", has!("avxvnni")),
            ("avx512f", has!("avx512f")),
            ("avx512bw", has!("avx512bw")),
            ("avx512vl", has!("avx512vl")),
            ("avx512dq", has!("avx512dq")),
            ("avx512vnni", has!("avx512vnni")),
            ("avx512bf16", has!("avx512bf16")),
            ("avx512fp16", has!("avx512fp16")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        [
            ("neon", has!("neon")),
            ("dotprod", has!("dotprod")),
            ("i8mm", has!("i8mm")),
            ("fp16", has!("fp16")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Vec::new()
    }
}

static SELECTED: OnceLock<Isa> = OnceLock::new();

/// The kernel set of this process: the one [`select`] chose, else the best the CPU has.
pub fn isa() -> Isa {
    *SELECTED.get_or_init(Isa::detected)
}

/// Chooses the kernel set from `HUATUO_KERNELS`'s value (`None`: the best the CPU has), before
/// any kernel runs. A set the CPU lacks is refused, naming what it lacks.
pub fn select(value: Option<&str>) -> Result<Isa, String> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(isa());
    };
    let wanted: Isa = value.parse().map_err(|e| format!("HUATUO_KERNELS: {e}"))?;
    let missing = wanted.missing();
    if !missing.is_empty() {
        return Err(format!(
            "HUATUO_KERNELS={wanted}: this CPU lacks {} (it runs {}); use one of {}",
            missing.join(", "),
            Isa::detected(),
            Isa::available()
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let chosen = *SELECTED.get_or_init(|| wanted);
    if chosen != wanted {
        return Err(format!(
            "HUATUO_KERNELS={wanted}: the kernels already run {chosen} in this process"
        ));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_parse_order_and_detect() {
        assert_eq!("AVX512".parse::<Isa>(), Ok(Isa::Avx512));
        assert!("neon".parse::<Isa>().is_err());
        assert!(Isa::Scalar < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
        let available = Isa::available();
        assert_eq!(available[0], Isa::Scalar);
        assert_eq!(*available.last().expect("one"), Isa::detected());
        // A set needs every feature of the ones below it.
        for pair in Isa::ALL.windows(2) {
            assert!(pair[0]
                .features()
                .iter()
                .all(|f| pair[1].features().contains(f)));
        }
        eprintln!("kernel sets this CPU runs: {available:?}");
    }
}
