//! How error messages quote what a caller sent: a name, path or value may be
//! megabytes long, and a message echoing it whole would carry it back over D-Bus and
//! HTTP and into the logs. Messages quote a short prefix instead.

use std::borrow::Cow;

/// Characters of the caller's text an error message quotes.
pub const EXCERPT_CHARS: usize = 64;

/// Characters of any message kimchid sends: the backstop for messages that quote
/// input without `excerpt` (libvirt's own, which echo names whole).
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// `text`, or its first `EXCERPT_CHARS` characters followed by "…" when it is longer
/// (cut on a character boundary).
pub fn excerpt(text: &str) -> Cow<'_, str> {
    cut(text, EXCERPT_CHARS)
}

/// A whole message, cut after `MAX_MESSAGE_CHARS` characters.
pub fn bounded_message(message: String) -> String {
    match cut(&message, MAX_MESSAGE_CHARS) {
        Cow::Borrowed(_) => message,
        Cow::Owned(cut) => cut,
    }
}

fn cut(text: &str, chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(chars) {
        None => Cow::Borrowed(text),
        Some((at, _)) => Cow::Owned(format!("{}…", &text[..at])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole() {
        for text in ["", "web-01", &"x".repeat(EXCERPT_CHARS)] {
            assert!(matches!(excerpt(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let ascii = "x".repeat(EXCERPT_CHARS + 1);
        assert_eq!(excerpt(&ascii), format!("{}…", "x".repeat(EXCERPT_CHARS)));
        // Two-byte characters: a cut by bytes would split one.
        let wide = "é".repeat(100_000);
        assert_eq!(excerpt(&wide), format!("{}…", "é".repeat(EXCERPT_CHARS)));
    }

    #[test]
    fn whole_messages_are_bounded() {
        let short = "no VM named 'web'".to_owned();
        assert_eq!(bounded_message(short.clone()), short);
        let echoed = format!("Domain not found: '{}'", "x".repeat(16 << 20));
        let bounded = bounded_message(echoed.clone());
        assert_eq!(bounded.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(bounded.ends_with('…') && echoed.starts_with(bounded.trim_end_matches('…')));
    }
}
