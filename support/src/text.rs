//! Text from outside (a bundle, a registry, a chart, a manifest) on the operator's terminal.

use std::borrow::Cow;

/// `s` with every control character but the newline written as an escape (`\u{1b}`), so text
/// from a bundle, a registry or a chart cannot move the cursor, recolour the terminal or
/// overwrite what was printed before it. Plain text comes back borrowed.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\n') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && c != '\n' {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_kept() {
        assert!(matches!(printable("nginx:1.27\nnext"), Cow::Borrowed(_)));
        assert_eq!(
            printable("rin\u{1b}[2J\u{1b}]0;owned\u{7}\r\u{9b}x\u{7f}"),
            "rin\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\u{d}\\u{9b}x\\u{7f}"
        );
    }
}
