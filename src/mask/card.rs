//! Card numbers: where they can be in a string or a JSON number, and whether digits are one.
//!
//! A card is 13-19 digits whose prefix belongs to a card brand with that length (the issuer
//! identification number, IIN) **and** whose Luhn check digit is right. Luhn alone passes one
//! number in ten, so ids and references that happen to be Luhn-valid are left alone unless they
//! also start like a card of their length.
//!
//! Finding candidates is linear in the input: a string is cut once into digit groups separated
//! by runs of spaces, dashes or dots; a card is either one whole group or a few consecutive
//! groups laid out the way printed cards are (a first group of four digits, middle groups of four
//! to six, a last group of one to six). Each group starts at most [`MAX_WINDOW`] windows of at
//! most 19 digits, so the work per byte is bounded by a constant whatever the input.
//!
//! Ids are not cards even when their digits read like one. A whole digit run inside a
//! hexadecimal token that stands alone, with a digit on the far side of a hex letter
//! (`j-2a4212120637001`, `0x1f4111111111111111`), is part of the id; letters alone glued to the
//! digits (`card4111111111111111`, `cc4111111111111111`) still leave a card. No card is taken
//! from inside a UUID (`12345678-4111-4111-8111-1003abcdef01`), whose groups can be laid out like
//! a printed card. Each such token is scanned once, however many candidates it holds.

/// The most groups one card spans (4-4-4-4-3 is five).
const MAX_WINDOW: usize = 5;

/// Brand prefixes: (lowest prefix, highest prefix, prefix digits, shortest, longest length).
const IIN: &[(u32, u32, u32, usize, usize)] = &[
    (4, 4, 1, 13, 19),           // Visa (13, 16, 19 in use)
    (51, 55, 2, 16, 16),         // Mastercard
    (2221, 2720, 4, 16, 16),     // Mastercard 2-series
    (34, 34, 2, 15, 15),         // American Express
    (37, 37, 2, 15, 15),         // American Express
    (6011, 6011, 4, 16, 19),     // Discover
    (644, 649, 3, 16, 19),       // Discover
    (65, 65, 2, 16, 19),         // Discover
    (3528, 3589, 4, 16, 19),     // JCB
    (300, 305, 3, 14, 19),       // Diners Club
    (3095, 3095, 4, 14, 19),     // Diners Club
    (36, 36, 2, 14, 19),         // Diners Club
    (38, 39, 2, 16, 19),         // Diners Club
    (62, 62, 2, 16, 19),         // UnionPay
    (50, 50, 2, 13, 19),         // Maestro
    (56, 58, 2, 13, 19),         // Maestro
    (6304, 6304, 4, 13, 19),     // Maestro
    (6759, 6759, 4, 13, 19),     // Maestro
    (6761, 6763, 4, 13, 19),     // Maestro
    (2200, 2204, 4, 16, 19),     // Mir
    (622126, 622925, 6, 16, 19), // Discover / UnionPay co-brand
];

pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = d.wrapping_sub(b'0') as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Whether the prefix of `digits` belongs to a brand that issues cards of this length.
pub fn iin_ok(digits: &[u8]) -> bool {
    let len = digits.len();
    IIN.iter().any(|&(lo, hi, n, min, max)| {
        (min..=max).contains(&len) && {
            let p = digits[..n as usize]
                .iter()
                .fold(0u32, |a, d| a * 10 + d.wrapping_sub(b'0') as u32);
            (lo..=hi).contains(&p)
        }
    })
}

/// ASCII digits that are a card number.
pub fn is_card(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len()) && iin_ok(digits) && luhn(digits)
}

fn is_sep(c: u8) -> bool {
    matches!(c, b' ' | b'-' | b'.')
}

/// Byte ranges of `s` that are card numbers (with their separators), in order.
pub fn find(s: &[u8], out: &mut Vec<(usize, usize)>) {
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut ids = Ids::default();
    let mut i = 0;
    while i < s.len() {
        if !s[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // One grouped run: digit groups joined by separator runs.
        groups.clear();
        loop {
            let start = i;
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
            groups.push((start, i));
            let mut j = i;
            while j < s.len() && is_sep(s[j]) {
                j += 1;
            }
            if j > i && j < s.len() && s[j].is_ascii_digit() {
                i = j;
            } else {
                break;
            }
        }
        windows(s, &groups, &mut ids, out);
    }
}

/// The id tokens around card candidates, kept from one candidate to the next. Tokens of one kind
/// are disjoint and candidates come left to right, so each token is scanned once: a long one
/// (`"4111111111111111a".repeat(n)`) costs its length, not its length per candidate.
#[derive(Default)]
struct Ids {
    hex: Option<HexToken>,
    /// The run of hex digits and dashes around the last window asked about, and whether it is
    /// a UUID.
    uuid: Option<(usize, usize, bool)>,
}

/// A maximal run of hex digits, `s[start..end]`.
#[derive(Clone, Copy)]
struct HexToken {
    start: usize,
    end: usize,
    /// Where its first digit is, and where its last digit ends.
    first_digit: usize,
    digits_end: usize,
    /// Neither side touches a letter or digit (a `0x` prefix counts as a boundary).
    alone: bool,
}

impl Ids {
    /// Whether the digit run `s[a..b]` is part of a hex id: its token stands alone and holds a
    /// digit beyond the run, so a hex letter sits between digits.
    fn in_hex_id(&mut self, s: &[u8], a: usize, b: usize) -> bool {
        let t = match self.hex {
            Some(t) if t.start <= a && a < t.end => t,
            _ => {
                let t = hex_token(s, a, b);
                self.hex = Some(t);
                t
            }
        };
        t.alone && (t.first_digit < a || t.digits_end > b)
    }

    /// Whether the window `s[a..b]` lies inside a UUID.
    fn in_uuid(&mut self, s: &[u8], a: usize, b: usize) -> bool {
        let (_, end, uuid) = match self.uuid {
            Some(u) if u.0 <= a && a < u.1 => u,
            _ => {
                let u = uuid_token(s, a);
                self.uuid = Some(u);
                u
            }
        };
        uuid && b <= end
    }
}

fn word(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// The hex token around the digit run `s[a..b]`.
fn hex_token(s: &[u8], a: usize, b: usize) -> HexToken {
    let mut start = a;
    while start > 0 && s[start - 1].is_ascii_hexdigit() {
        start -= 1;
    }
    let mut end = b;
    while end < s.len() && s[end].is_ascii_hexdigit() {
        end += 1;
    }
    let digit = |i: &usize| s[*i].is_ascii_digit();
    let first_digit = (start..a).find(digit).unwrap_or(a);
    let digits_end = (b..end).rev().find(digit).map_or(b, |i| i + 1);
    // `0x` before the token is a prefix, not a word it is glued to.
    let prefixed = start >= 2
        && matches!(s[start - 1], b'x' | b'X')
        && s[start - 2] == b'0'
        && (start == 2 || !word(s[start - 3]));
    let alone =
        (start == 0 || !word(s[start - 1]) || prefixed) && (end == s.len() || !word(s[end]));
    HexToken {
        start,
        end,
        first_digit,
        digits_end,
        alone,
    }
}

/// The maximal run of hex digits and dashes around `s[at]` (a digit), and whether it is a UUID:
/// 8-4-4-4-12 hex digits with no letter or digit on either side.
fn uuid_token(s: &[u8], at: usize) -> (usize, usize, bool) {
    let part = |c: u8| c.is_ascii_hexdigit() || c == b'-';
    let mut start = at;
    while start > 0 && part(s[start - 1]) {
        start -= 1;
    }
    let mut end = at;
    while end < s.len() && part(s[end]) {
        end += 1;
    }
    let uuid = end - start == 36
        && (start == 0 || !word(s[start - 1]))
        && (end == s.len() || !word(s[end]))
        && s[start..end]
            .iter()
            .enumerate()
            .all(|(i, &c)| (c == b'-') == matches!(i, 8 | 13 | 18 | 23));
    (start, end, uuid)
}

/// The cards in one grouped run: at each group, the longest window that is a card.
fn windows(s: &[u8], groups: &[(usize, usize)], ids: &mut Ids, out: &mut Vec<(usize, usize)>) {
    let glen = |g: (usize, usize)| g.1 - g.0;
    let mut digits = [0u8; 19];
    let mut a = 0;
    while a < groups.len() {
        let first = glen(groups[a]);
        let mut best = None;
        if (13..=19).contains(&first)
            && is_card(&s[groups[a].0..groups[a].1])
            && !ids.in_hex_id(s, groups[a].0, groups[a].1)
        {
            best = Some(a);
        }
        if first == 4 {
            let mut n = 0;
            for (b, &g) in groups.iter().enumerate().skip(a).take(MAX_WINDOW) {
                let l = glen(g);
                let middle = b > a;
                if n + l > 19 || (middle && l > 6) {
                    break;
                }
                digits[n..n + l].copy_from_slice(&s[g.0..g.1]);
                n += l;
                if middle && is_card(&digits[..n]) {
                    best = Some(b);
                }
                // Only the last group of a card may be shorter than four digits.
                if middle && l < 4 {
                    break;
                }
            }
        }
        // No window inside a UUID is a card; a shorter one from the same group lies inside too.
        let best = best.filter(|&b| !ids.in_uuid(s, groups[a].0, groups[b].1));
        match best {
            Some(b) => {
                out.push((groups[a].0, groups[b].1));
                a = b + 1;
            }
            None => a += 1,
        }
    }
}

/// A JSON number (as written) whose value, or whose digits, form a card: `4111111111111111`,
/// `-4111111111111111`, `4111111111111111.0`, `4.111111111111111e15`, `4111111111.111111`.
pub fn number_is_card(tok: &[u8]) -> bool {
    // Most numbers are short: without an exponent a card needs 13 digits written out.
    if tok.len() < 13 && memchr::memchr2(b'e', b'E', tok).is_none() {
        return false;
    }
    let t = tok.strip_prefix(b"-").unwrap_or(tok);
    let (mant, exp) = match memchr::memchr2(b'e', b'E', t) {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, &b""[..]),
    };
    let (int, frac) = match memchr::memchr(b'.', mant) {
        Some(i) => (&mant[..i], &mant[i + 1..]),
        None => (mant, &b""[..]),
    };
    if int.len() + frac.len() > 64 || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return false;
    }
    let mut all = [0u8; 64];
    let n = int.len() + frac.len();
    all[..int.len()].copy_from_slice(int);
    all[int.len()..n].copy_from_slice(frac);
    let all = &all[..n];
    // The digits as written, without leading zeros or a fraction's trailing zeros.
    let lead = all.iter().take_while(|d| **d == b'0').count();
    let trail = frac.iter().rev().take_while(|d| **d == b'0').count();
    let written = &all[lead.min(n - trail)..n - trail];
    if is_card(written) {
        return true;
    }
    // The value, when it is a whole number: the point moved by the exponent.
    let e: i64 = match std::str::from_utf8(exp).ok().filter(|e| !e.is_empty()) {
        None => 0,
        Some(e) => match e.trim_start_matches('+').parse::<i64>() {
            Ok(v) if v.abs() <= 64 => v,
            _ => return false,
        },
    };
    let point = int.len() as i64 + e;
    if point <= 0 || point > 64 {
        return false;
    }
    let point = point as usize;
    if all.iter().skip(point).any(|d| *d != b'0') {
        return false;
    }
    let mut value = [b'0'; 64];
    let k = point.min(n);
    value[..k].copy_from_slice(&all[..k]);
    let value = &value[..point];
    let lead = value.iter().take_while(|d| **d == b'0').count();
    is_card(&value[lead..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cards(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        find(s.as_bytes(), &mut out);
        out.iter().map(|&(a, b)| &s[a..b]).collect()
    }

    #[test]
    fn brands_and_lengths() {
        for c in [
            "4111111111111111",
            "4222222222222",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "6011111111111117",
            "3530111333300000",
            "30569309025904",
            "6200000000000005",
            "6759649826438453",
        ] {
            assert!(is_card(c.as_bytes()), "{c}");
        }
        // Luhn-valid, but no brand issues cards that start so, or of that length.
        for c in [
            "201906658197301",
            "1234567812345670",
            "3782822463100052",
            "9111111111111110",
        ] {
            assert!(luhn(c.as_bytes()), "{c} should be Luhn-valid");
            assert!(!is_card(c.as_bytes()), "{c}");
        }
    }

    #[test]
    fn separators_and_letters_around_cards() {
        assert_eq!(cards("card4111111111111111"), ["4111111111111111"]);
        assert_eq!(cards("4111111111111111x"), ["4111111111111111"]);
        assert_eq!(cards("4111.1111.1111.1111"), ["4111.1111.1111.1111"]);
        assert_eq!(cards("4111  1111  1111  1111"), ["4111  1111  1111  1111"]);
        assert_eq!(cards("3782 822463 10005"), ["3782 822463 10005"]);
        assert_eq!(
            cards("ref 2026-4111-1111-1111-1111"),
            ["4111-1111-1111-1111"]
        );
        // A longer digit run is not cut into a card.
        assert!(cards("94111111111111111").is_empty());
        assert!(cards("41111111111111119999").is_empty());
    }

    #[test]
    fn digit_runs_inside_hex_ids_are_not_cards() {
        // Luhn-valid, card-prefixed digits with hex letters and more digits around them.
        for s in [
            "j-2a4212120637001",
            "0x1f4111111111111111",
            "sha256:9f0e4212120637001c7d",
            "12345678-4111-4111-8111-1003abcdef01",
            "id=12345678-4111-4111-8111-1003abcdef01.",
        ] {
            assert!(cards(s).is_empty(), "{s}: {:?}", cards(s));
        }
        // Letters alone glued to the digits, a token glued to a word, a prefix glued to a word,
        // and groups laid out as printed (outside a UUID) are still cards.
        for (s, card) in [
            ("card4111111111111111", "4111111111111111"),
            ("cc4111111111111111", "4111111111111111"),
            ("a4111111111111111", "4111111111111111"),
            ("face4111111111111111", "4111111111111111"),
            ("0x4111111111111111", "4111111111111111"),
            ("2a4111111111111111g", "4111111111111111"),
            ("x0x1f4111111111111111", "4111111111111111"),
            ("2a4111 1111 1111 1111", "4111 1111 1111 1111"),
            ("4111-4111-8111-1003", "4111-4111-8111-1003"),
            (
                "x12345678-4111-4111-8111-1003abcdef01",
                "4111-4111-8111-1003",
            ),
        ] {
            assert_eq!(cards(s), [card], "{s}");
        }
    }

    #[test]
    fn one_long_token_is_scanned_once() {
        // One hex token of 1.7 MB holding 100 000 candidates: quadratic work would not finish.
        let hex = "4111111111111111a".repeat(100_000);
        assert!(cards(&hex).is_empty());
        // One run of hex digits and dashes, asked about for every card in it.
        let dashed = "4111-1111-1111-1111-".repeat(50_000);
        assert_eq!(cards(&dashed).len(), 50_000);
    }

    #[test]
    fn dates_and_short_groups_are_not_cards() {
        let dates = "2026-01-03 ".repeat(1000);
        assert!(cards(&dates).is_empty());
        assert!(cards(&"7 ".repeat(4000)).is_empty());
        assert!(cards("1.2.3.4 10.0.0.1 v4.1.1.1111").is_empty());
    }

    #[test]
    fn numbers_in_every_spelling() {
        for n in [
            "4111111111111111",
            "-4111111111111111",
            "4111111111111111.0",
            "4111111111111111.000",
            "4.111111111111111e15",
            "4.111111111111111E+15",
            "4111111111111111e0",
            "41111111111111110e-1",
            "4111111111.111111",
        ] {
            assert!(number_is_card(n.as_bytes()), "{n}");
        }
        for n in [
            "4111111111111112",
            "12.5",
            "1e400",
            "4.1e15",
            "1700000000123",
            "-0",
        ] {
            assert!(!number_is_card(n.as_bytes()), "{n}");
        }
    }
}
