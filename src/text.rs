//! Text encodings for the ack service's reply and for logging client text.
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
}
