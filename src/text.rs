//! Text encodings for the ack service's reply and for logging client text,
//! and the escaping of control characters in untrusted text shown on a
//! terminal.
//!
//! The notes' clients send UTF-8 on Linux and GBK on Windows; the server
//! answers in the encoding it is told to use. Pure: no I/O here.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// A text encoding the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Utf8,
    Gbk,
}

impl Encoding {
    /// `text` in this encoding. Characters GBK cannot represent become
    /// numeric character references, as encoding_rs does for the web.
    pub fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Encoding::Utf8 => text.as_bytes().to_vec(),
            Encoding::Gbk => encoding_rs::GBK.encode(text).0.into_owned(),
        }
    }

    /// `bytes` decoded, with malformed sequences replaced by U+FFFD: client
    /// bytes are never trusted to be valid.
    pub fn decode(self, bytes: &[u8]) -> Cow<'_, str> {
        match self {
            Encoding::Utf8 => String::from_utf8_lossy(bytes),
            Encoding::Gbk => encoding_rs::GBK.decode_without_bom_handling(bytes).0,
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Gbk => "gbk",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Encoding, String> {
        match s.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "gbk" => Ok(Encoding::Gbk),
            _ => Err(format!("unknown encoding '{s}' (one of: utf-8, gbk)")),
        }
    }
}

/// Appends `text` to `out` with every control character but `\n` and `\t`
/// made visible, so that text from someone else cannot drive the terminal
/// it is shown on (escape sequences that retitle the window, write the
/// clipboard with OSC 52, move the cursor to overwrite what was shown):
/// - C0 controls (U+0000 to U+001F, `\r` included, since it lets a line
///   overwrite itself) and DEL as `\x` and two hex digits: ESC is `\x1b`;
/// - C1 controls (U+0080 to U+009F, which some terminals obey as 8-bit
///   ESC sequences: U+009B is CSI) as `\u{9b}`.
///
/// A backslash is left as it is, so a sender can write `\x1b` literally;
/// that is only text, and cannot do what an ESC does.
pub fn escape_controls(text: &str, out: &mut String) {
    use fmt::Write;
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\0'..='\x1f' | '\x7f' => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{80}'..='\u{9f}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbk_round_trips_the_default_reply() {
        let bytes = Encoding::Gbk.encode("收到请求");
        assert_eq!(bytes, [0xca, 0xd5, 0xb5, 0xbd, 0xc7, 0xeb, 0xc7, 0xf3]);
        assert_eq!(Encoding::Gbk.decode(&bytes), "收到请求");
    }

    #[test]
    fn malformed_input_decodes_with_replacement() {
        assert_eq!(Encoding::Utf8.decode(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(Encoding::Gbk.decode(b"a\x81"), "a\u{fffd}");
    }

    #[test]
    fn names_parse_case_insensitively() {
        assert_eq!("GBK".parse::<Encoding>(), Ok(Encoding::Gbk));
        assert_eq!("utf8".parse::<Encoding>(), Ok(Encoding::Utf8));
        assert!("latin1".parse::<Encoding>().is_err());
    }

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        escape_controls(text, &mut out);
        out
    }

    #[test]
    fn escaping_shows_c0_del_and_c1_controls_and_keeps_newline_and_tab() {
        assert_eq!(escaped("a\tb\nc"), "a\tb\nc");
        assert_eq!(escaped("\x1b]0;owned\x07"), "\\x1b]0;owned\\x07");
        assert_eq!(escaped("\x1b]52;c;aGk=\x1b\\"), "\\x1b]52;c;aGk=\\x1b\\");
        assert_eq!(escaped("x\ry\0\x7f"), "x\\x0dy\\x00\\x7f");
        assert_eq!(escaped("\u{9b}2J\u{80}\u{9f}"), "\\u{9b}2J\\u{80}\\u{9f}");
    }

    #[test]
    fn escaping_leaves_printable_text_alone() {
        for text in [
            "plain",
            "收到请求",
            "\u{a0}\u{ff}é",
            "back\\slash",
            " ~",
            "",
        ] {
            assert_eq!(escaped(text), text);
        }
    }

    #[test]
    fn escaping_appends_without_clearing() {
        let mut out = String::from("> ");
        escape_controls("\x1b", &mut out);
        assert_eq!(out, "> \\x1b");
    }
}
