//! Maps a key path such as `sinks.archive.batch.max_bytes` or `sources.jobs.include[2]` to the
//! line it is written on, using a span-preserving parse of the original text.

use toml_edit::{Document, Item, Value};

pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

pub fn line_of_path(doc: &Document<&str>, text: &str, path: &str) -> Option<usize> {
    if path.is_empty() {
        return None;
    }
    let mut item: &Item = doc.as_item();
    let mut best: Option<usize> = None;
    for seg in split(path) {
        match seg {
            Seg::Key(k) => {
                let (key, next) = match item {
                    Item::Table(t) => t.get_key_value(k)?,
                    Item::Value(Value::InlineTable(t)) => t.get_key_value(k)?,
                    _ => return best,
                };
                if let Some(s) = key.span().or_else(|| next.span()) {
                    best = Some(line_of(text, s.start));
                }
                item = next;
            }
            Seg::Index(i) => match item {
                Item::Value(Value::Array(a)) => {
                    let v = a.get(i)?;
                    if let Some(s) = v.span() {
                        best = Some(line_of(text, s.start));
                    }
                    return best;
                }
                Item::ArrayOfTables(a) => {
                    let t = a.get(i)?;
                    if let Some(s) = t.span() {
                        best = Some(line_of(text, s.start));
                    }
                    // Keys inside an array-of-tables entry are not walked further.
                    return best;
                }
                _ => return best,
            },
        }
    }
    best
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn split(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::Key(name));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}
