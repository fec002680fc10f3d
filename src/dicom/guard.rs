//! Running dicom-rs and the codecs so that their panics on malformed input become errors.
//!
//! `catch_unwind` stops the unwinding, but the panic hook has already printed its message
//! (which could quote file bytes) by then. So the first guarded call installs a hook that
//! stays silent while the current thread is inside [`catch`] and otherwise calls the hook
//! that was there before. A hook installed later (the TUI's) should do the same check with
//! [`active`] so that a caught decoder panic is not treated as a crash.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

static HOOK: Once = Once::new();

/// Whether the current thread is running guarded DICOM code (a panic now will be caught and
/// reported as an error naming the file).
pub fn active() -> bool {
    INSIDE.with(Cell::get)
}

/// Runs `f`, turning a panic into `Err` without printing anything.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, ()> {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !active() {
                previous(info);
            }
        }));
    });
    let was = INSIDE.with(|c| c.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    INSIDE.with(|c| c.set(was));
    result.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_the_flag_resets() {
        assert!(!active());
        let r: Result<(), ()> = catch(|| panic!("decoder bug"));
        assert!(r.is_err());
        assert!(!active());
        assert_eq!(catch(|| 7), Ok(7));
    }
}
