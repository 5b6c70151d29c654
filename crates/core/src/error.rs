//! What every part of the daemon shares about errors: rendering a chain of causes.

/// Renders an error and its causes, one per line: `top: cause: root` style would lose
/// structure in long chains, so each cause gets its own `caused by:` line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str("\ncaused by: ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}
