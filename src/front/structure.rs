//! A linear scan of a file's blocks and numbers, for what the KDL parser cannot or does not
//! report well: nesting deep enough to exhaust the stack (checked before parsing), and, once
//! parsing failed, a block never closed or closed twice and a number out of range. The KDL
//! parser reports those at the start of the file or as several unrelated errors.
//!
//! Comments and strings are skipped (a template's `{{` is not a block); everything else is
//! KDL's own business.

/// What the scan found.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A `{` never closed; `early` is a `}` that lines up with an outer block (it was probably
    /// meant for that one, and this block's own `}` is missing).
    Unclosed { open: usize, early: Option<usize> },
    /// A `}` that closes nothing.
    Unopened { close: usize },
    /// A number too large for its type: an integer past 128 bits, a float past f64.
    OutOfRange { at: usize, len: usize, float: bool },
}

/// The offset of the first `{` that opens a block deeper than `limit`.
pub fn too_deep(text: &str, limit: usize) -> Option<usize> {
    let mut scan = Scan::new(text);
    let mut depth = 0usize;
    while let Some(token) = scan.next() {
        match token {
            Token::Open(at) => {
                depth += 1;
                if depth > limit {
                    return Some(at);
                }
            }
            Token::Close(_) => depth = depth.saturating_sub(1),
            Token::Number(..) => {}
        }
    }
    None
}

/// The unbalanced blocks and out-of-range numbers of a file, in file order.
pub fn problems(text: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut early: Option<(usize, usize)> = None;
    let mut scan = Scan::new(text);
    while let Some(token) = scan.next() {
        match token {
            Token::Open(at) => open.push(at),
            Token::Close(at) => match open.pop() {
                Some(from) => {
                    if early.is_none() && indent(text, at) < indent(text, from) {
                        early = Some((from, at));
                    }
                }
                None => out.push(Problem::Unopened { close: at }),
            },
            Token::Number(at, len) => {
                if let Some(float) = out_of_range(&text[at..at + len]) {
                    out.push(Problem::OutOfRange { at, len, float });
                }
            }
        }
    }
    if let Some(&innermost) = open.last() {
        let problem = match early {
            Some((from, at)) => Problem::Unclosed {
                open: from,
                early: Some(at),
            },
            None => Problem::Unclosed {
                open: innermost,
                early: None,
            },
        };
        out.push(problem);
    }
    out
}

/// `Some(is_float)` when a numeric literal is out of its type's range.
fn out_of_range(token: &str) -> Option<bool> {
    let digits: String = token.chars().filter(|&c| c != '_').collect();
    let unsigned = digits.trim_start_matches(['+', '-']);
    if unsigned.len() > 1 && unsigned.starts_with('0') && unsigned[1..].starts_with(['x', 'o', 'b'])
    {
        return None;
    }
    if digits.contains(['.', 'e', 'E']) {
        let value: f64 = digits.parse().ok()?;
        return (!value.is_finite()).then_some(true);
    }
    if !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i128>().is_err().then_some(false)
}

/// The indentation (spaces and tabs) of the line holding `offset`.
fn indent(text: &str, offset: usize) -> usize {
    let start = text[..offset].rfind('\n').map_or(0, |p| p + 1);
    text[start..]
        .bytes()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count()
}

enum Token {
    Open(usize),
    Close(usize),
    /// A numeric literal's offset and length.
    Number(usize, usize),
}

/// The braces and numbers of a text outside comments and strings.
struct Scan<'a> {
    bytes: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn new(text: &'a str) -> Self {
        Scan {
            bytes: text.as_bytes(),
            i: 0,
        }
    }

    fn next(&mut self) -> Option<Token> {
        let bytes = self.bytes;
        while self.i < bytes.len() {
            let at = self.i;
            match bytes[at] {
                b'{' => {
                    self.i += 1;
                    return Some(Token::Open(at));
                }
                b'}' => {
                    self.i += 1;
                    return Some(Token::Close(at));
                }
                b'/' if bytes.get(at + 1) == Some(&b'/') => self.i = find(bytes, at, b'\n'),
                b'/' if bytes.get(at + 1) == Some(&b'*') => self.block_comment(),
                b'"' => self.string(),
                b'#' => self.raw_string(),
                b'0'..=b'9' | b'+' | b'-' if self.number_starts(at) => {
                    let len = number_len(&bytes[at..]);
                    self.i += len;
                    return Some(Token::Number(at, len));
                }
                b if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') => {
                    // The rest of an identifier: `node-1` holds no number.
                    while self.i < bytes.len()
                        && (bytes[self.i].is_ascii_alphanumeric()
                            || matches!(bytes[self.i], b'_' | b'-' | b'.' | b'+'))
                    {
                        self.i += 1;
                    }
                }
                _ => self.i += 1,
            }
        }
        None
    }

    /// Whether a number starts at `at`: a digit, or a sign before one, where a value may begin.
    fn number_starts(&self, at: usize) -> bool {
        let bytes = self.bytes;
        let digit_at = if bytes[at].is_ascii_digit() {
            at
        } else {
            at + 1
        };
        let begins = at == 0
            || matches!(
                bytes[at - 1],
                b' ' | b'\t' | b'\n' | b'\r' | b'=' | b'(' | b')' | b'{' | b';'
            );
        begins && bytes.get(digit_at).is_some_and(u8::is_ascii_digit)
    }

    fn block_comment(&mut self) {
        let bytes = self.bytes;
        let mut open = 1usize;
        self.i += 2;
        while self.i < bytes.len() && open > 0 {
            if bytes[self.i..].starts_with(b"/*") {
                open += 1;
                self.i += 1;
            } else if bytes[self.i..].starts_with(b"*/") {
                open -= 1;
                self.i += 1;
            }
            self.i += 1;
        }
    }

    fn string(&mut self) {
        let bytes = self.bytes;
        self.i += 1;
        while self.i < bytes.len() && bytes[self.i] != b'"' {
            self.i += if bytes[self.i] == b'\\' { 2 } else { 1 };
        }
        self.i += 1;
    }

    fn raw_string(&mut self) {
        let bytes = self.bytes;
        let hashes = bytes[self.i..].iter().take_while(|&&b| b == b'#').count();
        if bytes.get(self.i + hashes) != Some(&b'"') {
            self.i += hashes;
            return;
        }
        let mut close = vec![b'"'];
        close.extend(std::iter::repeat_n(b'#', hashes));
        self.i += hashes + 1;
        while self.i < bytes.len() && !bytes[self.i..].starts_with(&close) {
            self.i += 1;
        }
        self.i += close.len();
    }
}

/// The length of the numeric literal at the start of `bytes`: digits, letters (a radix, an
/// exponent), `_`, `.`, and a sign after an exponent.
fn number_len(bytes: &[u8]) -> usize {
    let mut n = 1;
    while n < bytes.len() {
        let b = bytes[n];
        let exponent_sign = matches!(b, b'+' | b'-') && matches!(bytes[n - 1], b'e' | b'E');
        if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.') || exponent_sign) {
            break;
        }
        n += 1;
    }
    n
}

/// The index of the next `byte` at or after `from`, or the end.
fn find(bytes: &[u8], from: usize, byte: u8) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == byte)
        .map_or(bytes.len(), |p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unclosed_block_is_the_one_whose_close_lines_up_with_an_outer_block() {
        let text = "experiment \"e\" {\n    model \"mlp\" {\n        hidden 4\n    data \"x\"\n}\n";
        let model = text.find("\"mlp\" {").unwrap() + 6;
        let close = text.rfind('}').unwrap();
        assert_eq!(
            problems(text),
            vec![Problem::Unclosed {
                open: model,
                early: Some(close)
            }]
        );
        // Missing at the end: the innermost block left open.
        let text = "a {\n    b {\n        c 1\n    }\n";
        assert_eq!(
            problems(text),
            vec![Problem::Unclosed {
                open: 2,
                early: None
            }]
        );
    }

    #[test]
    fn a_close_without_an_open_is_found() {
        assert_eq!(
            problems("a {\n}\n}\n"),
            vec![Problem::Unopened { close: 6 }]
        );
    }

    #[test]
    fn numbers_out_of_range_are_found_and_others_are_not() {
        let big = "1".repeat(40);
        let text = format!(
            "a {big} 12 -3 1_000 0xffff 1.5e3 node-1 x=2\nb 1e400 {}.0\n",
            "9".repeat(400)
        );
        let found: Vec<(String, bool)> = problems(&text)
            .into_iter()
            .map(|p| match p {
                Problem::OutOfRange { at, len, float } => (text[at..at + len].to_owned(), float),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            found,
            vec![
                (big, false),
                ("1e400".to_owned(), true),
                (format!("{}.0", "9".repeat(400)), true)
            ]
        );
    }

    #[test]
    fn comments_and_strings_hide_braces_and_numbers() {
        let text = format!(
            "a \"{{{{ x }}\" // {{ {}\n/* }} */ #\"}}\"# {{\n}}\n",
            "9".repeat(50)
        );
        assert_eq!(problems(&text), vec![]);
        assert_eq!(too_deep("a { b { c { } } }", 2), Some(10));
    }
}
