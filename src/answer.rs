//! Answers in a task's output space: the label lists of the LaMP tasks with fixed labels, and how a
//! label or a rating is found in a model's text. Shared by the fit (pairs, real answers, the policy's
//! scores) and the evaluation (LaMP's metrics), which both sit above it.

/// LaMP-1's labels.
pub const LAMP1_LABELS: &[&str] = &["[1]", "[2]"];
/// LaMP-2's movie tags, in LaMP's order.
pub const LAMP2_LABELS: &[&str] = &[
    "sci-fi",
    "based on a book",
    "comedy",
    "action",
    "twist ending",
    "dystopia",
    "dark comedy",
    "classic",
    "psychology",
    "fantasy",
    "romance",
    "thought-provoking",
    "social commentary",
    "violence",
    "true story",
];
/// LaMP-3's ratings.
pub const LAMP3_LABELS: &[&str] = &["1", "2", "3", "4", "5"];

/// The label list of a history's task kind when it is a classification task with a fixed list
/// (LaMP-1/2, as `eval` names their users' items).
pub fn labels_for_kind(kind: &str) -> Option<&'static [&'static str]> {
    let k = kind.to_ascii_lowercase().replace(['-', '_'], "");
    if k.contains("lamp2") {
        Some(LAMP2_LABELS)
    } else if k.contains("lamp1") {
        Some(LAMP1_LABELS)
    } else {
        None
    }
}

/// The 1-5 rating in `text`, as `eval`'s answer extraction finds it for LaMP-3.
pub fn first_rating(text: &str) -> Option<&'static str> {
    let text = text.trim();
    let after_marker = list_marker_len(text).map(|n| &text[n..]);
    after_marker
        .and_then(|rest| lone_digit(rest, b'1'..=b'5'))
        .or_else(|| lone_digit(text, b'1'..=b'5'))
}

/// Length of a list number opening `text`: ASCII digits, then `.` or `)`, then whitespace.
fn list_marker_len(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let ok = digits > 0
        && matches!(b.get(digits), Some(b'.' | b')'))
        && b.get(digits + 1).is_some_and(|c| c.is_ascii_whitespace());
    ok.then_some(digits + 1)
}

/// The first ASCII digit in `range` with no ASCII digit on either side.
pub(crate) fn lone_digit(text: &str, range: std::ops::RangeInclusive<u8>) -> Option<&'static str> {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    let b = text.as_bytes();
    (0..b.len())
        .find(|&i| {
            range.contains(&b[i])
                && (i == 0 || !b[i - 1].is_ascii_digit())
                && b.get(i + 1).is_none_or(|c| !c.is_ascii_digit())
        })
        .map(|i| DIGITS[usize::from(b[i] - b'0')])
}

/// The label of `labels` occurring first in `text`, as `eval`'s answer extraction finds it for LaMP-1/2.
pub fn first_label<'l>(text: &str, labels: &[&'l str]) -> Option<&'l str> {
    let mut by_length: Vec<&'l str> = labels.to_vec();
    by_length.sort_by_key(|l| std::cmp::Reverse(l.len()));
    // a label is ASCII, so a match starts on an ASCII byte, which is always a char boundary
    (0..text.len())
        .filter(|&i| text.is_char_boundary(i))
        .find_map(|start| {
            by_length.iter().copied().find(|label| {
                match_label_at(text, start, label).is_some_and(|end| {
                    let word = |c: char| c.is_alphanumeric();
                    let first_is_word = label.chars().next().is_some_and(word);
                    let last_is_word = label.chars().next_back().is_some_and(word);
                    (!first_is_word || !text[..start].chars().next_back().is_some_and(word))
                        && (!last_is_word || !text[end..].chars().next().is_some_and(word))
                })
            })
        })
}

/// The end of `label` matched at byte `start` of `text`, if it matches there (ASCII case ignored; a space
/// or hyphen in the label matches a run of spaces, hyphens and underscores).
fn match_label_at(text: &str, start: usize, label: &str) -> Option<usize> {
    let t = text.as_bytes();
    let is_sep = |c: u8| matches!(c, b' ' | b'-' | b'_');
    let mut i = start;
    for &l in label.as_bytes() {
        if is_sep(l) {
            let run_start = i;
            while i < t.len() && is_sep(t[i]) {
                i += 1;
            }
            if i == run_start {
                return None;
            }
        } else if i < t.len() && t[i].eq_ignore_ascii_case(&l) {
            i += 1;
        } else {
            return None;
        }
    }
    Some(i)
}
