//! Named stages of a push, for the crash tests: each is logged at debug
//! level and is a failpoint (`FAILPOINTS=swap::after_flip=sleep(5000)`), so
//! a test can stop or kill the agent exactly there. With `FAILPOINTS`
//! unset every failpoint is a no-op.

/// Marks a stage of a push: logged at debug level, and a failpoint
/// (`FAILPOINTS=swap::after_flip=sleep(5000)`) so that the crash tests can
/// stop or kill the agent exactly there.
pub fn stage(name: &'static str) {
    tracing::debug!(stage = name, "push stage");
    fail::fail_point!(name);
}
