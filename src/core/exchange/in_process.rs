//! Whole exchanges run in one go, as if every message arrived at once: for
//! tests, property checks and models (the shell drives [`Pull`] and [`Push`]
//! message by message instead).

use super::{ExchangeError, Pull, PullDone, PullStep, Push, PushApplied};
use crate::core::Replica;

/// Runs a whole pull of `into` from `from` in one go, as if every message
/// arrived at once (tests, property checks and models; the shell drives
/// [`Pull`] message by message instead).
pub fn pull_all(
    from: &mut Replica,
    into: &mut Replica,
    snapshot: bool,
    max_bytes: usize,
    now_ms: u64,
) -> Result<PullDone, ExchangeError> {
    let mut pull = Pull::new(from.address(), snapshot);
    loop {
        let request = pull.request(into);
        let chunk = from.answer_pull(&request, now_ms, max_bytes)?;
        if let PullStep::Done(done) = pull.on_chunk(into, chunk, now_ms)? {
            return Ok(done);
        }
    }
}

/// Runs a whole push from `from` to `into` in one go; `None` when `from`
/// knows of nothing `into` lacks.
pub fn push_all(
    from: &Replica,
    into: &mut Replica,
    max_bytes: usize,
    now_ms: u64,
) -> Result<Option<PushApplied>, ExchangeError> {
    let Some(mut push) = Push::start(from, into.address()) else {
        return Ok(None);
    };
    let mut last = None;
    while let Some(request) = push.next_request(from, max_bytes)? {
        last = Some(into.accept_push(request, now_ms)?);
    }
    Ok(last)
}
