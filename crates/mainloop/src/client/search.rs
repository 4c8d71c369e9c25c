//! `mainloop search`: the user's history by full-text search, one block per hit with the
//! words found marked (bold on a terminal, `[…]` elsewhere) and the task to open.

use super::http::ClientError;
use super::render::{ago, one_line, short_id};
use super::{Ctx, ids};
use serde::Deserialize;
use serde_json::Value;
use std::io::IsTerminal;
use time::OffsetDateTime;

/// A hit (`SearchHit` in the API document), read leniently like every view.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct HitView {
    pub kind: String,
    pub id: String,
    pub task_id: Option<String>,
    pub title: String,
    pub snippet: String,
    /// `[start, end)` character offsets into `snippet`.
    pub highlights: Vec<[u32; 2]>,
    pub created_at: String,
}

/// How the words found stand out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marks {
    /// ANSI bold, for a terminal.
    Bold,
    /// `[` and `]`, for a pipe, a file, or `NO_COLOR`.
    Brackets,
}

impl Marks {
    /// Bold on a terminal unless `NO_COLOR` is set (to anything but the empty string).
    fn for_stdout() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if std::io::stdout().is_terminal() && !no_color {
            Self::Bold
        } else {
            Self::Brackets
        }
    }

    const fn around(self) -> (&'static str, &'static str) {
        match self {
            Self::Bold => ("\x1b[1m", "\x1b[0m"),
            Self::Brackets => ("[", "]"),
        }
    }
}

/// The filters of one search, as typed.
#[derive(Debug, Default)]
pub struct Filters<'a> {
    pub kinds: &'a [String],
    pub task: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub limit: Option<u32>,
}

/// `mainloop search QUERY…`.
pub async fn search(ctx: &Ctx, q: &str, f: &Filters<'_>) -> Result<(), ClientError> {
    let mut query: Vec<(&str, String)> = vec![("q", q.to_owned())];
    query.extend(f.kinds.iter().map(|k| ("kind", k.clone())));
    if let Some(t) = f.task {
        query.push(("task", ids::resolve(&ctx.api, t).await?));
    }
    query.extend(f.from.map(|d| ("from", d.to_owned())));
    query.extend(f.to.map(|d| ("to", d.to_owned())));
    query.extend(f.limit.map(|n| ("limit", n.to_string())));
    let body = ctx.api.get("/api/search", &query).await?;
    ctx.show(&body, || {
        hits(
            &read_hits(&body),
            q,
            OffsetDateTime::now_utc(),
            Marks::for_stdout(),
        )
    })
}

fn read_hits(body: &Value) -> Vec<HitView> {
    body["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| serde_json::from_value(h.clone()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Every hit, one block each, best first; or what to try when there is none.
#[must_use]
pub fn hits(list: &[HitView], q: &str, now: OffsetDateTime, marks: Marks) -> String {
    if list.is_empty() {
        return format!(
            "Nothing found for '{}'. Every word must occur; try fewer words or no filters.\n",
            plain(q)
        );
    }
    list.iter()
        .map(|h| hit(h, now, marks))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One hit: kind, title and date; the snippet with the words found marked; the command
/// that opens its task.
#[must_use]
pub fn hit(h: &HitView, now: OffsetDateTime, marks: Marks) -> String {
    let day = h.created_at.get(..10).unwrap_or(&h.created_at);
    let mut out = format!(
        "{} · {} · {} ({})\n  {}\n",
        plain(&h.kind),
        plain(&one_line(&h.title, 72)),
        plain(day),
        ago(&h.created_at, now),
        marked(&h.snippet, &h.highlights, marks)
    );
    if let Some(task) = &h.task_id {
        out.push_str(&format!("  open: mainloop task {}\n", short_id(task)));
    }
    out
}

/// `snippet` on one line with the `highlights` (character ranges) marked. Ranges out of
/// order, overlapping or past the end are left out or cut, never a panic.
#[must_use]
pub fn marked(snippet: &str, highlights: &[[u32; 2]], marks: Marks) -> String {
    let chars: Vec<char> = plain(snippet).chars().collect();
    let mut ranges: Vec<(usize, usize)> = highlights
        .iter()
        .map(|[s, e]| (*s as usize, (*e as usize).min(chars.len())))
        .filter(|(s, e)| s < e)
        .collect();
    ranges.sort_unstable();
    let (open, close) = marks.around();
    let mut out = String::new();
    let mut at = 0;
    for (start, end) in ranges {
        if start < at {
            continue;
        }
        out.extend(&chars[at..start]);
        out.push_str(open);
        out.extend(&chars[start..end]);
        out.push_str(close);
        at = end;
    }
    out.extend(&chars[at..]);
    out
}

/// Text from the server as one line that cannot drive the terminal: every control
/// character (newlines, escapes) becomes a space, one for one, so offsets still hold.
fn plain(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-06 12:00:00 UTC);

    fn view(v: &Value) -> HitView {
        serde_json::from_value(v.clone()).unwrap()
    }

    #[test]
    fn a_hit_shows_kind_title_date_the_words_found_and_its_task() {
        let h = view(&json!({
            "kind": "plan", "id": "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b:2",
            "task_id": "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b",
            "title": "Refactor the auth middleware\nand its tests",
            "snippet": "…keep auth in the gateway; refactor later",
            "highlights": [[6, 10], [27, 35]],
            "created_at": "2026-11-03T09:30:00Z"
        }));
        assert_eq!(
            hit(&h, NOW, Marks::Brackets),
            "plan · Refactor the auth middleware · 2026-11-03 (33 d ago)\n  \
             …keep [auth] in the gateway; [refactor] later\n  \
             open: mainloop task 3e4f5a6b\n"
        );
        assert_eq!(
            hit(&h, NOW, Marks::Bold).lines().nth(1).unwrap(),
            "  …keep \x1b[1mauth\x1b[0m in the gateway; \x1b[1mrefactor\x1b[0m later"
        );
    }

    #[test]
    fn a_message_has_no_task_to_open() {
        let h = view(&json!({
            "kind": "message", "id": "m1", "task_id": null, "title": "You",
            "snippet": "what about billing?", "highlights": [[11, 18]],
            "created_at": "2026-12-06T11:00:00Z"
        }));
        assert_eq!(
            hit(&h, NOW, Marks::Brackets),
            "message · You · 2026-12-06 (1 h ago)\n  what about [billing]?\n"
        );
    }

    #[test]
    fn odd_highlights_and_control_characters_do_no_harm() {
        assert_eq!(
            marked(
                "ab\ncd\x1b[31mef",
                &[[3, 5], [0, 1], [4, 6], [9, 99], [7, 7]],
                Marks::Brackets
            ),
            "[a]b [cd] [31[mef]"
        );
        assert_eq!(marked("", &[[0, 3]], Marks::Brackets), "");
        assert_eq!(
            marked("héllo wörld", &[[6, 11]], Marks::Brackets),
            "héllo [wörld]"
        );
    }

    #[test]
    fn blocks_are_separated_and_an_empty_result_says_what_to_try() {
        let one = json!({"kind": "task", "title": "t", "snippet": "s", "created_at": "x"});
        let body = json!({"results": [one, one]});
        let out = hits(&read_hits(&body), "q", NOW, Marks::Brackets);
        assert_eq!(out, "task · t · x (x)\n  s\n\ntask · t · x (x)\n  s\n");
        assert_eq!(
            hits(&[], "auth\x1b", NOW, Marks::Bold),
            "Nothing found for 'auth '. Every word must occur; try fewer words or no filters.\n"
        );
    }
}
