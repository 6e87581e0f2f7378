//! Formatting shared by the bench modes' progress lines and the report.
//!
//! A leaf: it imports no other bench module, so any module may use it
//! without creating an import cycle.

use std::time::Duration;

/// A duration that may not have happened, for messages: "1502 ms" or "not within timeout".
pub fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("not within timeout".to_string(), |v| format!("{v:.0} ms"))
}

/// A duration in (fractional) milliseconds, the unit results are recorded in.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_ms_rounds_to_whole_milliseconds_or_says_it_never_happened() {
        assert_eq!(fmt_ms(Some(1502.4)), "1502 ms");
        assert_eq!(fmt_ms(None), "not within timeout");
    }

    #[test]
    fn millis_keeps_fractions() {
        assert_eq!(millis(Duration::from_micros(1500)), 1.5);
    }
}
