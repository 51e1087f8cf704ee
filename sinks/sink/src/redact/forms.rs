//! The forms a secret value takes in what others write: percent-encoded in URLs and form
//! bodies, JSON-escaped the ways common encoders do. A registered value is searched for in
//! every one of them, so that a credential echoed back in an error body is masked too.

/// A value as written, and as others write it, deduplicated (at most 9 forms):
/// - percent-encoded as in a URL, and as in a form body (`application/x-www-form-urlencoded`,
///   where `~` is encoded too), each with upper- and with lower-case hex (`%2B`, `%2b`);
/// - JSON-escaped the minimal way (serde_json, Go's and Python's escapes of `"`, `\` and
///   control characters), and that with `/` as `\/` (PHP);
/// - JSON-escaped as .NET's System.Text.Json does by default (`"&'+<>` and backquote and all
///   non-ASCII as `\uXXXX` with upper-case hex);
/// - JSON-escaped HTML-safe with lower-case hex (`<>&` and non-ASCII as `\u003c`, `\u00e9`:
///   Go's HTML escaping and Python's `ensure_ascii`).
pub fn encodings(v: &str) -> Vec<String> {
    let url = crate::percent_encode(v);
    let form = url.replace('~', "%7E");
    let url_lower = lower_hex(&url);
    let form_lower = lower_hex(&form);
    let mut out = vec![v.to_string()];
    for e in [
        url,
        form,
        url_lower,
        form_lower,
        json_escape(v, Json::Minimal),
        json_escape(v, Json::Php),
        json_escape(v, Json::DotNet),
        json_escape(v, Json::HtmlLower),
    ] {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// A percent-encoded string with the hex digits after each `%` in lower case.
fn lower_hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut hex = 0u8;
    for c in s.chars() {
        if hex > 0 {
            out.push(c.to_ascii_lowercase());
            hex -= 1;
        } else {
            if c == '%' {
                hex = 2;
            }
            out.push(c);
        }
    }
    out
}

/// The ways JSON encoders escape a string's characters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Json {
    /// serde_json, Go without HTML escaping, Python with `ensure_ascii=False`: `\"`, `\\`,
    /// `\n` `\r` `\t` `\b` `\f`, other control characters as `\u00xx`.
    Minimal,
    /// PHP's `json_encode` on ASCII: minimal, and `/` as `\/`.
    Php,
    /// .NET System.Text.Json's default encoder: `"&'+<>` and backquote, DEL and everything
    /// not ASCII as `\uXXXX` with upper-case hex (UTF-16 units), `\\`, short control escapes.
    DotNet,
    /// Minimal, and `<>&` and everything not ASCII as `\uxxxx` with lower-case hex.
    HtmlLower,
}

/// `v` as the body of a JSON string written in `style`, without the quotes.
fn json_escape(v: &str, style: Json) -> String {
    let upper = style == Json::DotNet;
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '"' if style == Json::DotNet => push_unit(&mut out, 0x22, upper),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '/' if style == Json::Php => out.push_str("\\/"),
            '&' | '<' | '>' if matches!(style, Json::DotNet | Json::HtmlLower) => {
                push_unit(&mut out, c as u16, upper)
            }
            '\'' | '+' | '`' | '\u{7f}' if style == Json::DotNet => {
                push_unit(&mut out, c as u16, upper)
            }
            c if (c as u32) < 0x20 => push_unit(&mut out, c as u16, upper),
            c if !c.is_ascii() && matches!(style, Json::DotNet | Json::HtmlLower) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf).iter() {
                    push_unit(&mut out, *unit, upper);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// `\u` and one UTF-16 unit as four hex digits.
fn push_unit(out: &mut String, unit: u16, upper: bool) {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    out.push_str("\\u");
    for shift in [12u32, 8, 4, 0] {
        out.push(char::from(digits[usize::from((unit >> shift) & 0xF)]));
    }
}
