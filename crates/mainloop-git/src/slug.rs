//! Turning a free-text task description into the readable part of a branch name.
//! Output is always a valid ref component: `[a-z0-9]+(-[a-z0-9]+)*`, never empty.

/// Longest slug we produce; branch names stay readable in `git branch` and PR lists.
pub const SLUG_MAX: usize = 40;

const FALLBACK: &str = "task";

/// Lowercase ASCII words joined by `-`, at most [`SLUG_MAX`] characters, cut at a
/// word boundary when possible. Common Latin accents are folded (`é` → `e`, `ß` →
/// `ss`); other characters separate words. Never empty: `"task"` when nothing is
/// left.
pub fn slug(description: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in description.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else if let Some(folded) = fold(c) {
            word.push_str(folded);
        } else if !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        words.push(word);
    }

    let mut out = String::new();
    for w in &words {
        let needed = if out.is_empty() { w.len() } else { w.len() + 1 };
        if out.len() + needed <= SLUG_MAX {
            if !out.is_empty() {
                out.push('-');
            }
            out.push_str(w);
        } else {
            if out.is_empty() {
                // A single word longer than the limit: cut it rather than lose it.
                out.push_str(&w[..SLUG_MAX]);
            }
            break;
        }
    }
    if out.is_empty() {
        FALLBACK.to_owned()
    } else {
        out
    }
}

/// ASCII spellings of common lowercase Latin letters with diacritics, so "Café
/// naïve" reads "cafe-naive" rather than "caf-na-ve".
fn fold(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'č' | 'ĉ' | 'ċ' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
        'ğ' | 'ģ' | 'ĝ' => "g",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => "i",
        'ķ' => "k",
        'ł' | 'ľ' | 'ļ' | 'ĺ' => "l",
        'ñ' | 'ń' | 'ň' | 'ņ' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'œ' => "oe",
        'ř' | 'ŕ' => "r",
        'ś' | 'š' | 'ş' | 'ș' => "s",
        'ß' => "ss",
        'ť' | 'ţ' | 'ț' => "t",
        'þ' => "th",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => "u",
        'ý' | 'ÿ' => "y",
        'ź' | 'ž' | 'ż' => "z",
        _ => return None,
    })
}
