//! Log lines whose pace the network decides (refused handshakes, denied calls, floods, a
//! full connection cap): at most one per interval, and the lines held back in between are
//! counted by reason, so the next line that is written says how many were dropped and why
//! (`suppressed=41 suppressed_reasons="unknown CA=30 expired=11"`).

use std::{
    fmt,
    sync::Mutex,
    time::{Duration, Instant},
};

/// One line per `every` at most, with counts by reason of the ones held back.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    held: Held,
}

/// The lines held back since the last one written, counted by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held(Vec<(&'static str, u64)>);

impl Held {
    /// How many lines were held back, of every reason.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    fn add(&mut self, reason: &'static str) {
        match self.0.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            // Reasons are a handful of static names; the list cannot grow past them.
            None => self.0.push((reason, 1)),
        }
    }
}

/// `reason=count` pairs, space-separated; `-` when none were held back.
impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, (reason, n)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{reason}={n}")?;
        }
        Ok(())
    }
}

impl Throttle {
    pub fn every(every: Duration) -> Throttle {
        Throttle {
            every,
            state: Mutex::default(),
        }
    }

    /// `Some(what was held back since the last line)` when a line for `reason` may be
    /// written now; otherwise counts it as held back.
    pub fn allow(&self, reason: &'static str) -> Option<Held> {
        self.allow_at(reason, Instant::now())
    }

    fn allow_at(&self, reason: &'static str, now: Instant) -> Option<Held> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.last.is_some_and(|last| now < last + self.every) {
            state.held.add(reason);
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.held))
    }

    /// What was held back, once the interval since the last line has passed: for a
    /// summary line when no new line came to carry the count.
    pub fn flush(&self) -> Option<Held> {
        self.flush_at(Instant::now())
    }

    fn flush_at(&self, now: Instant) -> Option<Held> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = state.last.is_none_or(|last| now >= last + self.every);
        if !due || state.held.0.is_empty() {
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line per interval; the next one carries the held-back counts by reason.
    #[test]
    fn holds_back_and_counts_by_reason() {
        let t = Throttle::every(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(t.allow_at("a", start), Some(Held::default()));
        for reason in ["a", "b", "a"] {
            assert_eq!(t.allow_at(reason, start + Duration::from_millis(500)), None);
        }
        let held = t.allow_at("b", start + Duration::from_secs(1)).unwrap();
        assert_eq!((held.total(), held.to_string()), (3, "a=2 b=1".to_string()));
        assert_eq!(Held::default().to_string(), "-");
        assert_eq!(t.allow_at("a", start + Duration::from_millis(1500)), None);
        let later = start + Duration::from_millis(2100);
        assert_eq!(
            t.flush_at(later),
            Some(Held(vec![("a", 1)])),
            "due: a second passed"
        );
        assert_eq!(t.flush_at(later), None, "nothing held back any more");
    }
}
