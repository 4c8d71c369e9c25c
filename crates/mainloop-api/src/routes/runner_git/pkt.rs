//! Git's pkt-lines, read strictly and purely: a request's first section (everything up
//! to its first flush) and a push's ref updates, checked against the one branch a
//! runner may update before any of the request reaches git.

/// The longest pkt-line git writes or accepts (`LARGE_PACKET_MAX`), its 4 length bytes
/// included.
pub(crate) const MAX_PKT_LEN: usize = 65520;

/// Why a request's pkt-lines cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PktError {
    /// The 4 length bytes are not hex, or name a length no pkt-line has.
    BadLength(String),
    /// A pkt-line longer than git allows.
    TooLong(usize),
    /// The body ended before the section's flush.
    Truncated,
    /// A line that is not what the section may hold.
    Malformed(String),
}

impl std::fmt::Display for PktError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadLength(what) => write!(f, "malformed pkt-line length {what}"),
            Self::TooLong(n) => write!(f, "a pkt-line of {n} bytes; at most {MAX_PKT_LEN}"),
            Self::Truncated => f.write_str("the request ended before its first flush-pkt"),
            Self::Malformed(why) => f.write_str(why),
        }
    }
}

/// A request's lines up to its first flush.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Section<T> {
    pub lines: Vec<T>,
    /// The bytes the section takes, its flush included.
    pub len: usize,
}

/// The payloads of `buf`'s pkt-lines up to its first flush (`0000`); `None` while `buf`
/// holds only part of them.
///
/// # Errors
/// A length that is not 4 hex digits, is 1 to 3 (delimiters belong to protocol v2,
/// which these routes do not speak) or exceeds [`MAX_PKT_LEN`].
pub(crate) fn first_section(buf: &[u8]) -> Result<Option<Section<&[u8]>>, PktError> {
    let mut lines = Vec::new();
    let mut at = 0;
    loop {
        let Some(head) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        let len = parse_len(head)?;
        if len == 0 {
            return Ok(Some(Section { lines, len: at + 4 }));
        }
        if len < 4 {
            return Err(PktError::BadLength(format!("{len:04x}")));
        }
        if len > MAX_PKT_LEN {
            return Err(PktError::TooLong(len));
        }
        let Some(payload) = buf.get(at + 4..at + len) else {
            return Ok(None);
        };
        lines.push(payload);
        at += len;
    }
}

fn parse_len(head: &[u8]) -> Result<usize, PktError> {
    let shown = || String::from_utf8_lossy(head).into_owned();
    if !head.iter().all(u8::is_ascii_hexdigit) {
        return Err(PktError::BadLength(format!("{:?}", shown())));
    }
    let text = std::str::from_utf8(head).map_err(|_| PktError::BadLength(shown()))?;
    usize::from_str_radix(text, 16).map_err(|_| PktError::BadLength(shown()))
}

/// One ref update of a push: `<old> <new> <ref>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefUpdate {
    pub old: String,
    pub new: String,
    pub refname: String,
}

impl RefUpdate {
    /// A new value of all zeros deletes the ref.
    pub(crate) fn deletes(&self) -> bool {
        self.new.bytes().all(|b| b == b'0')
    }
}

/// A push's ref updates (the lines before its first flush; the pack follows); `None`
/// while `buf` holds only part of them. The first line may
/// carry capabilities after a NUL; `shallow <oid>` lines, which a push from a shallow
/// clone sends first, are skipped.
///
/// # Errors
/// Framing errors as [`first_section`]'s; a line that is not `<old> <new> <ref>` with
/// two object ids of one length (SHA-1 or SHA-256, lower-case hex) and a `refs/` name;
/// a signed push (`push-cert`), which this server does not offer.
pub(crate) fn ref_updates(buf: &[u8]) -> Result<Option<Section<RefUpdate>>, PktError> {
    let Some(Section { lines, len }) = first_section(buf)? else {
        return Ok(None);
    };
    let mut updates = Vec::with_capacity(lines.len());
    for (i, line) in lines.into_iter().enumerate() {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        // Only the first line carries capabilities; git stops reading any line at NUL.
        let command = line.split(|b| *b == 0).next().unwrap_or_default();
        let text = std::str::from_utf8(command)
            .map_err(|_| PktError::Malformed(format!("command {} is not UTF-8", i + 1)))?;
        if let Some(oid) = text.strip_prefix("shallow ") {
            if is_oid(oid) {
                continue;
            }
            return Err(PktError::Malformed(format!(
                "a malformed shallow line: {text:?}"
            )));
        }
        if text.starts_with("push-cert") {
            return Err(PktError::Malformed(
                "signed pushes are not accepted here".into(),
            ));
        }
        updates.push(parse_update(text)?);
    }
    Ok(Some(Section {
        lines: updates,
        len,
    }))
}

fn parse_update(text: &str) -> Result<RefUpdate, PktError> {
    let bad = || PktError::Malformed(format!("not a ref update `<old> <new> <ref>`: {text:?}"));
    let mut parts = text.splitn(3, ' ');
    let (Some(old), Some(new), Some(refname)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if !is_oid(old) || !is_oid(new) || old.len() != new.len() {
        return Err(bad());
    }
    if !refname.starts_with("refs/") || refname.contains([' ', '\0']) {
        return Err(bad());
    }
    Ok(RefUpdate {
        old: old.to_owned(),
        new: new.to_owned(),
        refname: refname.to_owned(),
    })
}

fn is_oid(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Refuses a push that would do more than update the refs in `allowed` (the task
/// branch and its snapshot ref): any other ref, and any deletion, are refused with the
/// reason.
pub(crate) fn check_updates(updates: &[RefUpdate], allowed: &[&str]) -> Result<(), String> {
    let named = allowed.join(" or ");
    for u in updates {
        if u.deletes() {
            return Err(format!(
                "deleting refs is not allowed: {} (a runner may only update {named})",
                u.refname
            ));
        }
        if !allowed.contains(&u.refname.as_str()) {
            return Err(format!(
                "a runner may only update {named}, not {}",
                u.refname
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const ZERO: &str = "0000000000000000000000000000000000000000";
    const ALLOWED: &[&str] = &["refs/heads/task", "refs/mainloop/snapshots/t"];

    fn pkt(payload: &str) -> Vec<u8> {
        let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
        out.extend_from_slice(payload.as_bytes());
        out
    }

    fn push(lines: &[&str], pack: &[u8]) -> Vec<u8> {
        let mut out: Vec<u8> = lines.iter().flat_map(|l| pkt(l)).collect();
        out.extend_from_slice(b"0000");
        out.extend_from_slice(pack);
        out
    }

    #[test]
    fn good_commands_are_read_up_to_the_flush_and_the_pack_is_left() {
        let first = format!("{A} {B} refs/heads/task\0report-status side-band-64k agent=git/2.47");
        let body = push(
            &[&first, &format!("{ZERO} {A} refs/heads/task\n")],
            b"PACK...",
        );
        let Section {
            lines: updates,
            len,
        } = ref_updates(&body).unwrap().unwrap();
        assert_eq!(&body[len..], b"PACK...");
        assert_eq!(
            updates[0],
            RefUpdate {
                old: A.into(),
                new: B.into(),
                refname: "refs/heads/task".into()
            }
        );
        assert_eq!(updates[1].old, ZERO, "creating the branch is an update");
        assert_eq!(check_updates(&updates, ALLOWED), Ok(()));
        // The task's snapshot ref is the other one a runner sends.
        let snap = push(
            &[&format!("{A} {B} refs/mainloop/snapshots/t\0report-status")],
            b"",
        );
        let updates = ref_updates(&snap).unwrap().unwrap().lines;
        assert_eq!(check_updates(&updates, ALLOWED), Ok(()));
        let theirs = push(
            &[&format!("{A} {B} refs/mainloop/snapshots/u\0report-status")],
            b"",
        );
        let updates = ref_updates(&theirs).unwrap().unwrap().lines;
        assert!(check_updates(&updates, ALLOWED).is_err());
        // Shallow lines come first from a shallow clone and are not updates.
        let shallow = push(
            &[&format!("shallow {A}"), &format!("{A} {B} refs/heads/task")],
            b"",
        );
        assert_eq!(ref_updates(&shallow).unwrap().unwrap().lines.len(), 1);
        // SHA-256 repositories.
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let long = push(&[&format!("{a} {b} refs/heads/task")], b"");
        assert_eq!(ref_updates(&long).unwrap().unwrap().lines[0].new, b);
    }

    #[test]
    fn another_ref_or_a_deletion_is_refused() {
        let other = push(&[&format!("{A} {B} refs/heads/main\0report-status")], b"");
        let updates = ref_updates(&other).unwrap().unwrap().lines;
        let why = check_updates(&updates, ALLOWED).unwrap_err();
        assert!(why.contains("refs/heads/main"), "{why}");
        // One good update does not carry a bad one.
        let mixed = push(
            &[
                &format!("{A} {B} refs/heads/task\0report-status"),
                &format!("{A} {B} refs/tags/v1"),
            ],
            b"",
        );
        let updates = ref_updates(&mixed).unwrap().unwrap().lines;
        assert!(check_updates(&updates, ALLOWED).is_err());
        let delete = push(
            &[&format!("{A} {ZERO} refs/heads/task\0report-status")],
            b"",
        );
        let updates = ref_updates(&delete).unwrap().unwrap().lines;
        let why = check_updates(&updates, ALLOWED).unwrap_err();
        assert!(why.contains("deleting"), "{why}");
        // A prefix of the branch is another ref.
        let longer = push(&[&format!("{A} {B} refs/heads/task-2")], b"");
        let updates = ref_updates(&longer).unwrap().unwrap().lines;
        assert!(check_updates(&updates, ALLOWED).is_err());
    }

    #[test]
    fn malformed_lengths_are_refused() {
        for body in [
            &b"zzzz"[..],
            b"00g1",
            b"0001",
            b"0002",
            b"0003",
            b"-001",
            b"+01a",
        ] {
            assert!(
                matches!(first_section(body), Err(PktError::BadLength(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // An empty line (0004) is a pkt-line, but not a ref update.
        assert!(matches!(
            ref_updates(b"00040000"),
            Err(PktError::Malformed(_))
        ));
        for line in [
            format!("{A} {B}"),
            format!("{A} {B} "),
            format!("{A} {B} HEAD"),
            format!("{A} {} refs/heads/task", &B[..39]),
            format!("{} {B} refs/heads/task", A.to_uppercase().replace('1', "F")),
            format!("{A} {} refs/heads/task", "b".repeat(64)),
            format!("push-cert\0{A}"),
            "shallow nope".to_owned(),
        ] {
            assert!(
                matches!(
                    ref_updates(&push(&[&line], b"")),
                    Err(PktError::Malformed(_))
                ),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_truncated_section_asks_for_more_and_never_reads_past_the_buffer() {
        let body = push(&[&format!("{A} {B} refs/heads/task")], b"");
        for cut in 0..body.len() {
            assert_eq!(ref_updates(&body[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(ref_updates(&body).unwrap().is_some());
        // A length that promises more than is there is still only "more to come".
        assert_eq!(first_section(b"00ffabc"), Ok(None));
    }

    #[test]
    fn an_oversized_line_is_refused_before_it_is_read() {
        assert_eq!(first_section(b"fff1"), Err(PktError::TooLong(0xfff1)));
        assert_eq!(first_section(b"ffff"), Err(PktError::TooLong(0xffff)));
        let max = "x".repeat(MAX_PKT_LEN - 4);
        let mut body = pkt(&max);
        body.extend_from_slice(b"0000");
        assert_eq!(
            first_section(&body).unwrap().unwrap().lines[0].len(),
            MAX_PKT_LEN - 4
        );
    }
}
