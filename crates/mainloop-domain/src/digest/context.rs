//! Which digests a main-thread context carries and how they read there: the `<memory>`
//! section of the system prompt, or what a session keeping its own context is told.

use super::{Digest, Period, Span, Zone};
use crate::Timestamp;
use std::fmt::Write as _;

/// A digest's share of the context, in tokens (about four characters each, plus its
/// framing), as the rest of the context is counted.
#[must_use]
pub fn digest_tokens(d: &Digest) -> usize {
    d.text.len().div_ceil(4) + 16
}

/// The digests a context carries at `now`, oldest first: the months before the
/// current one, then the weeks that end in the current month, then the finished days of
/// the current week — the pyramid, each level covering the time since the level above
/// ends. Quiet ones are left out. When they exceed `budget` tokens, the oldest go first.
#[must_use]
pub fn pyramid<'a>(
    digests: &'a [Digest],
    zone: &Zone,
    now: Timestamp,
    budget: usize,
) -> Vec<&'a Digest> {
    let today = zone.date(now);
    let month = Span::containing(Period::Month, today).start;
    let week = Span::containing(Period::Week, today).start;
    let mut chosen: Vec<&Digest> = digests
        .iter()
        .filter(|d| !d.quiet && d.end <= today)
        .filter(|d| match d.period {
            Period::Month => d.end <= month,
            Period::Week => d.end > month,
            Period::Day => d.start >= week,
        })
        .collect();
    chosen.sort_by_key(|d| (std::cmp::Reverse(d.period), d.start));
    let mut used = 0;
    let mut keep = chosen.len();
    for d in chosen.iter().rev() {
        let cost = digest_tokens(d);
        if used + cost > budget {
            break;
        }
        used += cost;
        keep -= 1;
    }
    chosen.split_off(keep)
}

/// The `<memory>` section for `chosen` (from [`pyramid`]), or `None` when empty.
#[must_use]
pub fn memory_section(zone: &str, chosen: &[&Digest]) -> Option<String> {
    if chosen.is_empty() {
        return None;
    }
    let mut out = format!(
        "<memory>\nDigests of the user's earlier months, weeks and days (oldest first; each \
         made when its span ended, in the user's time zone, {zone}). Tasks are named by id \
         for get_task; search_history finds the details.\n"
    );
    for d in chosen {
        let _ = writeln!(
            out,
            "<digest period=\"{}\" start=\"{}\">\n{}\n</digest>",
            d.period, d.start, d.text
        );
    }
    out.push_str("</memory>");
    Some(out)
}

/// What a session keeping its own context is told when the memory section changed
/// since it was last told (`section`: [`memory_section`]'s output).
#[must_use]
pub fn session_update(section: Option<&str>) -> String {
    match section {
        Some(s) => format!(
            "[mainloop: the digests of the user's earlier days, weeks and months are now as \
             follows; they replace any you were told before.]\n{s}"
        ),
        None => {
            "[mainloop: no digests of earlier days are kept in your context any more.]".to_owned()
        }
    }
}
