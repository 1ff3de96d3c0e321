//! How errors are written: an error and its sources as one sentence, the way both binaries
//! print them (`{:#}` for anyhow errors reads the same).

/// An error and its sources as one line, `outer: cause: root cause`. A source whose text
/// the line already holds (an error that repeats its cause in its own message) is not
/// written twice.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading /etc/x")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("loading: {0}")]
    struct Repeats(#[source] std::io::Error);

    /// Sources are joined with `: `; one the message already shows is not repeated.
    #[test]
    fn joins_sources_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(chain(&Outer(io())), "reading /etc/x: no such file");
        assert_eq!(chain(&Repeats(io())), "loading: no such file");
    }
}
