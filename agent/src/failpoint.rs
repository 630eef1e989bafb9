//! Named stages of a push, for the crash and failure tests: each is logged
//! at debug level and is a failpoint (`FAILPOINTS=swap::after_flip=sleep(5000)`),
//! so a test can stop, kill or fail the agent exactly there. `return` makes
//! the stage fail with an I/O error, as a full disk would. With `FAILPOINTS`
//! unset every failpoint is a no-op.

/// Marks a stage of a push; `Err` only when a test injected a failure here.
pub fn stage(name: &'static str) -> std::io::Result<()> {
    tracing::debug!(stage = name, "push stage");
    match fail::eval(name, |_| ()) {
        Some(()) => Err(std::io::Error::other(format!("failpoint {name}"))),
        None => Ok(()),
    }
}
