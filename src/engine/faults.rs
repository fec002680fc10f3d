//! Faults the test suite injects into the worker, so it can exercise failure paths that real
//! models almost never take. They exist only in builds with the `test-support` feature (the
//! test suite turns it on); in every other build [`Faults`] is an empty type whose one check
//! compiles to nothing, so no release binary carries a hook.

use super::pipeline::EngineError;

/// What to inject.
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Every generation fails (as a model computation error would) after streaming this many
    /// tokens.
    pub fail_after_tokens: Option<usize>,
    /// Every generated token takes at least this long, so tests can interrupt an answer
    /// midway (tiny test models otherwise finish in milliseconds).
    pub token_delay: Option<std::time::Duration>,
}

/// Nothing to inject: builds without the `test-support` feature.
#[cfg(not(feature = "test-support"))]
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults;

impl Faults {
    /// The faults the environment asks for (`HUATUO_TEST_TOKEN_DELAY_MS`, read by
    /// [`crate::config::test_token_delay`]), for the binary under test.
    pub fn from_env() -> Self {
        #[cfg(feature = "test-support")]
        return Self {
            token_delay: crate::config::test_token_delay(),
            ..Self::default()
        };
        #[cfg(not(feature = "test-support"))]
        Self
    }

    /// Runs before each generated token, `tokens` having been generated so far: waits, or
    /// fails as a model computation would.
    #[cfg_attr(not(feature = "test-support"), allow(unused_variables))]
    pub(super) fn before_token(&self, tokens: usize) -> Result<(), EngineError> {
        #[cfg(feature = "test-support")]
        {
            if self.fail_after_tokens.is_some_and(|n| tokens >= n) {
                return Err(injected(tokens));
            }
            if let Some(delay) = self.token_delay {
                std::thread::sleep(delay);
            }
        }
        Ok(())
    }
}

#[cfg(feature = "test-support")]
pub(super) fn injected(tokens: usize) -> EngineError {
    use crate::model::ModelError;
    EngineError::Model(ModelError::Candle(candle_core::Error::Msg(format!(
        "injected fault after {tokens} tokens"
    ))))
}
