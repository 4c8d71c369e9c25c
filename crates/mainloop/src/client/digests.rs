//! `mainloop digests`, `mainloop digest` and `mainloop time-zone`: the user's day, week
//! and month digests (each its title, then its text; a quiet one as one dim line) and
//! the time zone whose midnights end the user's days.

use super::Ctx;
use super::http::ClientError;
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::IsTerminal;

/// A digest (`Digest` in the API document), read leniently like every view.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct DigestView {
    pub id: String,
    pub period: String,
    pub start: String,
    pub title: String,
    pub quiet: bool,
    pub text: String,
}

/// How quiet digests and ids fade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// ANSI dim, for a terminal.
    Dim,
    /// Nothing, for a pipe, a file, or `NO_COLOR`.
    Plain,
}

impl Tone {
    fn for_stdout() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if std::io::stdout().is_terminal() && !no_color {
            Self::Dim
        } else {
            Self::Plain
        }
    }

    fn dim(self, text: &str) -> String {
        match self {
            Self::Dim => format!("\x1b[2m{text}\x1b[0m"),
            Self::Plain => text.to_owned(),
        }
    }
}

/// What `mainloop digests` asks for, as typed.
#[derive(Debug, Default)]
pub struct Filters<'a> {
    pub period: Option<&'a str>,
    pub before: Option<&'a str>,
    pub limit: Option<u32>,
}

/// `mainloop digests`.
pub async fn list(ctx: &Ctx, f: &Filters<'_>) -> Result<(), ClientError> {
    let mut query: Vec<(&str, String)> = Vec::new();
    query.extend(f.period.map(|p| ("period", p.to_owned())));
    query.extend(f.before.map(|d| ("before", d.to_owned())));
    query.extend(f.limit.map(|n| ("limit", n.to_string())));
    let body = ctx.api.get("/api/digests", &query).await?;
    ctx.show(&body, || {
        let zone = body["time_zone"].as_str().unwrap_or("UTC");
        digests(&read_digests(&body), zone, Tone::for_stdout())
    })
}

/// `mainloop digest ID`.
pub async fn show(ctx: &Ctx, id: &str) -> Result<(), ClientError> {
    let id = id.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(ClientError::Usage(format!(
            "'{}' is not a digest id (a UUID, as `mainloop digests` shows it)",
            plain_line(id)
        )));
    }
    let body = ctx.api.get(&format!("/api/digests/{id}"), &[]).await?;
    ctx.show(&body, || {
        let d: DigestView = serde_json::from_value(body.clone()).unwrap_or_default();
        digest(&d, Tone::for_stdout())
    })
}

/// `mainloop time-zone [ZONE | --default]`: shows the zone, or sets it (`None` with
/// `default`: back to the server's default).
pub async fn time_zone(ctx: &Ctx, zone: Option<&str>, default: bool) -> Result<(), ClientError> {
    let body = match (zone, default) {
        (None, false) => ctx.api.get("/api/settings/time-zone", &[]).await?,
        (zone, _) => {
            ctx.api
                .put("/api/settings/time-zone", &json!({"time_zone": zone}))
                .await?
        }
    };
    ctx.show(&body, || zone_words(&body))
}

fn read_digests(body: &Value) -> Vec<DigestView> {
    body["digests"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| serde_json::from_value(d.clone()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Every digest, newest first, a blank line between them; or what to expect when there
/// is none yet.
#[must_use]
pub fn digests(list: &[DigestView], zone: &str, tone: Tone) -> String {
    if list.is_empty() {
        return format!(
            "No digests yet. A day's is made once the day ends in your time zone ({}); \
             a week's and a month's from their days.\n",
            plain_line(zone)
        );
    }
    let mut out = String::new();
    for (i, d) in list.iter().enumerate() {
        if d.quiet {
            out.push_str(&tone.dim(&format!("{} — nothing happened", plain_line(&d.title))));
            out.push('\n');
            continue;
        }
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&digest(d, tone));
        if list.get(i + 1).is_some_and(|next| next.quiet) {
            out.push('\n');
        }
    }
    out
}

/// One digest in full: its title and id, then its text indented (the text's own first
/// line, the title again, left out).
#[must_use]
pub fn digest(d: &DigestView, tone: Tone) -> String {
    let title = plain_line(&d.title);
    let mut out = format!(
        "{title}  {}\n",
        tone.dim(&format!("digest {}", plain_line(&d.id)))
    );
    let mut lines = d.text.lines().peekable();
    if lines
        .peek()
        .is_some_and(|first| !title.is_empty() && first.starts_with(&d.title))
    {
        lines.next();
    }
    for line in lines.filter(|l| !l.trim().is_empty()) {
        out.push_str("  ");
        out.push_str(&plain_line(line));
        out.push('\n');
    }
    out
}

/// The zone, and whether it is the server's default.
#[must_use]
pub fn zone_words(body: &Value) -> String {
    let zone = plain_line(body["time_zone"].as_str().unwrap_or("?"));
    if body["default"].as_bool().unwrap_or(false) {
        format!("Time zone: {zone} (the server's default)\n")
    } else {
        format!("Time zone: {zone}\n")
    }
}

/// Text from the server on one line that cannot drive the terminal.
fn plain_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(v: &Value) -> DigestView {
        serde_json::from_value(v.clone()).unwrap()
    }

    fn day() -> Value {
        json!({
            "id": "0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b", "period": "day",
            "start": "2026-11-03", "end": "2026-11-04",
            "title": "Tuesday 3 November 2026", "time_zone": "Europe/Paris", "quiet": false,
            "text": "Tuesday 3 November 2026 (Europe/Paris)\nAsked (1): \"Fix billing\"\nSpawned (1): Fix billing [task 42]",
            "facts": {}, "created_at": "2026-11-04T00:05:00Z"
        })
    }

    fn quiet() -> Value {
        json!({"id": "q", "period": "day", "start": "2026-11-02",
               "title": "Monday 2 November 2026", "quiet": true,
               "text": "Monday 2 November 2026 (UTC)\nNothing was asked, started or finished."})
    }

    #[test]
    fn a_digest_is_its_title_then_its_text() {
        assert_eq!(
            digest(&view(&day()), Tone::Plain),
            "Tuesday 3 November 2026  digest 0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b\n  \
             Asked (1): \"Fix billing\"\n  Spawned (1): Fix billing [task 42]\n"
        );
        assert_eq!(
            digest(&view(&day()), Tone::Dim).lines().next().unwrap(),
            "Tuesday 3 November 2026  \x1b[2mdigest 0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b\x1b[0m"
        );
    }

    #[test]
    fn quiet_digests_are_one_dim_line_between_the_others() {
        let list: Vec<DigestView> = [day(), quiet(), quiet(), day()].iter().map(view).collect();
        let out = digests(&list, "UTC", Tone::Plain);
        let full = digest(&view(&day()), Tone::Plain);
        assert_eq!(
            out,
            format!(
                "{full}\nMonday 2 November 2026 — nothing happened\n\
                 Monday 2 November 2026 — nothing happened\n\n{full}"
            )
        );
        assert_eq!(
            digests(&list[1..2], "UTC", Tone::Dim),
            "\x1b[2mMonday 2 November 2026 — nothing happened\x1b[0m\n"
        );
    }

    #[test]
    fn no_digests_says_when_they_come_and_control_characters_do_no_harm() {
        assert_eq!(
            digests(&[], "Europe/Paris\x1b", Tone::Plain),
            "No digests yet. A day's is made once the day ends in your time zone \
             (Europe/Paris ); a week's and a month's from their days.\n"
        );
        let hostile = view(&json!({"id": "x\x1b[31m", "title": "T\nU", "text": "T\nline\x07\n\n"}));
        assert_eq!(
            digest(&hostile, Tone::Plain),
            "T U  digest x [31m\n  T\n  line \n"
        );
        let body = json!({"digests": [{"title": 5}, "junk"], "time_zone": "UTC"});
        assert_eq!(read_digests(&body).len(), 2, "read leniently");
    }

    #[test]
    fn the_zone_says_whether_it_is_the_default() {
        assert_eq!(
            zone_words(&json!({"time_zone": "UTC", "default": true})),
            "Time zone: UTC (the server's default)\n"
        );
        assert_eq!(
            zone_words(&json!({"time_zone": "Europe/Paris", "default": false})),
            "Time zone: Europe/Paris\n"
        );
    }
}
