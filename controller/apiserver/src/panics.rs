//! A panic is a bug, but one request's bug must cost that request only: code that runs under
//! a shared lock, and each request's handler, run through [`catch`], which turns a panic into
//! an error carrying its message.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`; a panic in it comes back as `Err` with the panic's message (and is logged, with
/// `during` saying what was being done).
pub(crate) fn catch<R>(during: &str, f: impl FnOnce() -> R) -> Result<R, String> {
    // The callers keep no state that a half-done `f` could leave inconsistent (the store's
    // queue changes its bookkeeping only after `f` returns), so unwinding past them is safe.
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        tracing::error!(during, %message, "a bug: code panicked; the request fails, the server goes on");
        message
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_comes_back_as_its_message_and_the_caller_goes_on() {
        assert_eq!(catch("adding", || 1 + 1), Ok(2));
        assert_eq!(
            catch("indexing", || -> u8 { panic!("index into a number") }),
            Err("index into a number".to_owned())
        );
        let field = "metadata";
        assert_eq!(
            catch("formatting", || -> u8 { panic!("{field} is 1") }),
            Err("metadata is 1".to_owned())
        );
    }
}
