//! Refusals that changed nothing: the device or datastore is as it was, and running the
//! same command with the right option (or the right path) goes ahead.

/// Exit status of a refusal that changed nothing (would overwrite, conflicts, an unsafe
/// datastore).
pub const EXIT_REFUSED: i32 = 8;

/// Prints a refusal (`odt: error: ...` on stderr; with `json`, also one JSON object with an
/// `error` of a stable `kind` on stdout) and returns [`EXIT_REFUSED`].
pub fn report(kind: &str, message: &str, json: bool) -> anyhow::Result<i32> {
    eprintln!("odt: error: {message}");
    if json {
        crate::output::json(&serde_json::json!({
            "error": { "kind": kind, "message": message, "exit_code": EXIT_REFUSED }
        }))?;
    }
    Ok(EXIT_REFUSED)
}
