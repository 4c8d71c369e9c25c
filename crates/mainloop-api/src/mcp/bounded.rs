//! Bounded pages of the two tools whose output can be large (`get_transcript`,
//! `get_diff`): a model's context is small, so each reply has a stated maximum and says
//! how much more there is and how to ask for it. Pure functions over data.

use mainloop_domain::records::TaskDiff;
use serde_json::{Value, json};

/// Transcript entries per page unless the caller asks for fewer or more.
pub const DEFAULT_TRANSCRIPT_ENTRIES: usize = 50;
/// The most transcript entries one page holds.
pub const MAX_TRANSCRIPT_ENTRIES: usize = 200;
/// The most bytes of entry JSON one transcript page holds.
pub const MAX_TRANSCRIPT_BYTES: usize = 64 * 1024;
/// An entry larger than this is cut short, so one huge tool output cannot fill a page.
pub const MAX_ENTRY_BYTES: usize = MAX_TRANSCRIPT_BYTES / 4;
/// Diff text per page unless the caller asks for less or more.
pub const DEFAULT_DIFF_BYTES: usize = 32 * 1024;
/// The most diff text one page holds.
pub const MAX_DIFF_BYTES: usize = 128 * 1024;
/// The most per-file stats one diff page lists.
pub const MAX_DIFF_FILES: usize = 200;

/// One page of transcript entries (each the JSON of a `TranscriptRecord`, in order,
/// all after `after`). `exhausted` says whether `records` holds every entry after
/// `after` or only as many as were read.
#[must_use]
pub fn transcript_page(records: Vec<Value>, after: i64, limit: usize, exhausted: bool) -> Value {
    let limit = limit.clamp(1, MAX_TRANSCRIPT_ENTRIES);
    let total = records.len();
    let mut entries = Vec::new();
    let mut bytes = 0;
    let mut next_after = after;
    for record in records {
        if entries.len() == limit {
            break;
        }
        let entry = cut_entry(record);
        let size = entry.to_string().len();
        if !entries.is_empty() && bytes + size > MAX_TRANSCRIPT_BYTES {
            break;
        }
        bytes += size;
        next_after = entry["seq"].as_i64().unwrap_or(next_after);
        entries.push(entry);
    }
    let more = total - entries.len();
    let mut page = json!({"entries": entries, "next_after": next_after, "more": more});
    if more > 0 {
        let at_least = if exhausted { "" } else { "at least " };
        page["note"] =
            format!("truncated: {at_least}{more} more entries; call again with after={next_after}")
                .into();
    }
    page
}

/// An entry within [`MAX_ENTRY_BYTES`]: larger ones keep their position, kind and time,
/// and the start of their JSON as text.
fn cut_entry(record: Value) -> Value {
    let text = record.to_string();
    if text.len() <= MAX_ENTRY_BYTES {
        return record;
    }
    let keep = floor_char_boundary(&text, MAX_ENTRY_BYTES - 512);
    json!({
        "seq": record["seq"],
        "kind": record["kind"],
        "created_at": record["created_at"],
        "cut": format!("this entry is {} bytes of JSON; the first {keep} follow", text.len()),
        "start": &text[..keep],
    })
}

/// One page of a diff: the stats in full (up to [`MAX_DIFF_FILES`] files) and at most
/// `max_bytes` of the text from byte `offset` (both moved back to a character boundary).
///
/// # Errors
/// An offset past the end of the text.
pub fn diff_page(diff: &TaskDiff, offset: usize, max_bytes: usize) -> Result<Value, String> {
    let text = diff.text.as_str();
    if offset > text.len() {
        return Err(format!(
            "offset {offset} is past the end of the diff ({} bytes)",
            text.len()
        ));
    }
    let start = floor_char_boundary(text, offset);
    let max_bytes = max_bytes.clamp(1, MAX_DIFF_BYTES);
    let mut end = floor_char_boundary(text, start.saturating_add(max_bytes).min(text.len()));
    if end == start && start < text.len() {
        // A character longer than the page: take it whole rather than never moving on.
        end = text[start..]
            .char_indices()
            .nth(1)
            .map_or(text.len(), |(i, _)| start + i);
    }
    let files: Vec<&_> = diff.files.iter().take(MAX_DIFF_FILES).collect();
    let more_bytes = text.len() - end;
    let mut page = json!({
        "base": diff.base,
        "branch": diff.branch,
        "added": diff.added,
        "removed": diff.removed,
        "files": files,
        "total_bytes": text.len(),
        "offset": start,
        "text": &text[start..end],
        "next_offset": end,
        "more_bytes": more_bytes,
    });
    let mut notes = Vec::new();
    if diff.files.len() > MAX_DIFF_FILES {
        notes.push(format!(
            "{} more files changed than listed",
            diff.files.len() - MAX_DIFF_FILES
        ));
    }
    if more_bytes > 0 {
        notes.push(format!(
            "truncated: {more_bytes} more bytes of diff; call again with offset={end}"
        ));
    }
    if !notes.is_empty() {
        page["note"] = notes.join("; ").into();
    }
    Ok(page)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use mainloop_domain::records::FileStat;

    fn entry(seq: i64, text: &str) -> Value {
        json!({"task_id": "t", "seq": seq, "kind": "text", "text": text, "created_at": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn transcript_pages_stop_at_the_limit_and_say_where_to_go_on() {
        let records: Vec<Value> = (1..=5).map(|i| entry(i, "hi")).collect();
        let page = transcript_page(records.clone(), 0, 2, true);
        assert_eq!(page["entries"].as_array().unwrap().len(), 2);
        assert_eq!(page["next_after"], 2);
        assert_eq!(page["more"], 3);
        assert_eq!(
            page["note"],
            "truncated: 3 more entries; call again with after=2"
        );
        let all = transcript_page(records, 0, 50, true);
        assert_eq!(all["more"], 0);
        assert!(all.get("note").is_none());
        let unknown = transcript_page((1..=3).map(|i| entry(i, "x")).collect(), 0, 1, false);
        assert!(
            unknown["note"]
                .as_str()
                .unwrap()
                .contains("at least 2 more")
        );
        let empty = transcript_page(vec![], 7, 10, true);
        assert_eq!(
            (empty["next_after"].as_i64(), empty["more"].as_u64()),
            (Some(7), Some(0))
        );
    }

    #[test]
    fn transcript_pages_stay_within_their_bytes_and_cut_huge_entries() {
        let big = "x".repeat(MAX_ENTRY_BYTES - 1000);
        let records: Vec<Value> = (1..=10).map(|i| entry(i, &big)).collect();
        let page = transcript_page(records, 0, 200, true);
        let n = page["entries"].as_array().unwrap().len();
        assert!((1..10).contains(&n), "{n}");
        assert!(page["entries"].to_string().len() <= MAX_TRANSCRIPT_BYTES);
        assert_eq!(page["more"], 10 - n);

        let huge = entry(1, &"é".repeat(MAX_TRANSCRIPT_BYTES));
        let page = transcript_page(vec![huge], 0, 10, true);
        let cut = &page["entries"][0];
        assert_eq!(
            (cut["seq"].as_i64(), cut["kind"].as_str()),
            (Some(1), Some("text"))
        );
        assert!(cut["cut"].as_str().unwrap().contains("bytes of JSON"));
        assert!(cut.to_string().len() <= MAX_ENTRY_BYTES);
    }

    fn diff(text: &str, files: usize) -> TaskDiff {
        TaskDiff {
            base: "main".into(),
            branch: "mainloop/x".into(),
            files: (0..files)
                .map(|i| FileStat {
                    path: format!("f{i}"),
                    added: 1,
                    removed: 0,
                })
                .collect(),
            added: 1,
            removed: 0,
            text: text.into(),
        }
    }

    #[test]
    fn diff_pages_walk_the_text_on_character_boundaries() {
        let d = diff("abcé€fgh", 1);
        let mut offset = 0;
        let mut seen = String::new();
        loop {
            let page = diff_page(&d, offset, 3).unwrap();
            seen.push_str(page["text"].as_str().unwrap());
            offset = usize::try_from(page["next_offset"].as_u64().unwrap()).unwrap();
            if page["more_bytes"] == 0 {
                assert!(page.get("note").is_none());
                break;
            }
            assert!(
                page["note"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("offset={offset}"))
            );
        }
        assert_eq!(seen, d.text);
        // A page smaller than a character still moves on.
        let page = diff_page(&d, 4, 1).unwrap();
        assert_eq!(page["text"], "é");
        assert!(diff_page(&d, 100, 10).unwrap_err().contains("past the end"));
        let many = diff_page(&diff("", MAX_DIFF_FILES + 3), 0, 10).unwrap();
        assert_eq!(many["files"].as_array().unwrap().len(), MAX_DIFF_FILES);
        assert!(many["note"].as_str().unwrap().starts_with("3 more files"));
    }
}
