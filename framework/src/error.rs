//! What every error type here shares: a boxed cause, and a way to print a cause chain in one line.

use std::fmt;

/// Any error, as a cause kept behind another.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error followed by each of its causes, `: `-joined, as logs and exit messages print it
/// (what `anyhow`'s `{:#}` prints, for errors that are not `anyhow` ones).
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// A record its handler cannot use (not the event its topic carries, a field out of range, ...):
/// the worker dead-letters it with this reason and goes on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] BoxError);

    #[test]
    fn a_report_prints_every_cause() {
        let e = Outer(Box::new(Outer("inner".into())));
        assert_eq!(Report(&e).to_string(), "outer: outer: inner");
    }
}
