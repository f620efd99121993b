//! containerd's filter language, as its List (Walk) sends it: each filter
//! string is an AND of `fieldpath OP value` selectors joined by `,`, and
//! the strings are ORed. containerd 1.6 relies on one after a remote
//! layer's Prepare answers AlreadyExists:
//! `labels."containerd.io/snapshot.ref"==sha256:…,parent=="…"`.
//! Written by hand: no crate parses it; the grammar is containerd's
//! `filters/parser.go` (quotes `"`, `/`, `|`; unquoted values end at
//! whitespace or `,`).

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A field that is present.
    Present,
    Equal(String),
    NotEqual(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub field: Vec<String>,
    pub op: Op,
}

/// The fields of a snapshot a filter can name.
pub struct Fields<'a> {
    pub name: &'a str,
    pub parent: &'a str,
    pub kind: &'a str,
    pub labels: &'a HashMap<String, String>,
}

/// Parsed filters: empty matches everything.
#[derive(Debug, Default)]
pub struct Filters(Vec<Vec<Selector>>);

impl Filters {
    pub fn parse(filters: &[String]) -> Result<Self, String> {
        let mut all = Vec::new();
        for f in filters.iter().filter(|f| !f.trim().is_empty()) {
            all.push(parse_one(f).map_err(|e| format!("filter {f:?}: {e}"))?);
        }
        Ok(Filters(all))
    }

    pub fn matches(&self, s: &Fields) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|and| and.iter().all(|sel| sel.matches(s)))
    }
}

impl Selector {
    fn matches(&self, s: &Fields) -> bool {
        let value: Option<&str> = match self.field.as_slice() {
            [f] if f == "name" => Some(s.name),
            [f] if f == "parent" => Some(s.parent),
            [f] if f == "kind" => Some(s.kind),
            [f, key] if f == "labels" => s.labels.get(key).map(String::as_str),
            [f, rest @ ..] if f == "labels" => s.labels.get(&rest.join(".")).map(String::as_str),
            _ => None,
        };
        match &self.op {
            Op::Present => value.is_some(),
            Op::Equal(v) => value == Some(v.as_str()),
            Op::NotEqual(v) => value != Some(v.as_str()),
        }
    }
}

fn parse_one(s: &str) -> Result<Vec<Selector>, String> {
    let mut p = Parser {
        s: s.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip_space();
        let mut field = vec![p.field()?];
        while p.eat(b'.') {
            field.push(p.field()?);
        }
        p.skip_space();
        let op = if p.eat_str("==") {
            Op::Equal(p.value()?)
        } else if p.eat_str("!=") {
            Op::NotEqual(p.value()?)
        } else if p.eat_str("~=") {
            return Err("the ~= operator (regular expressions) is not supported".into());
        } else {
            Op::Present
        };
        out.push(Selector { field, op });
        p.skip_space();
        if p.i == p.s.len() {
            return Ok(out);
        }
        if !p.eat(b',') {
            return Err(format!("unexpected {:?} at {}", p.s[p.i] as char, p.i));
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, t: &str) -> bool {
        if self.s[self.i..].starts_with(t.as_bytes()) {
            self.i += t.len();
            true
        } else {
            false
        }
    }

    /// A field: an identifier, or a quoted string.
    fn field(&mut self) -> Result<String, String> {
        if let Some(q) = self.quoted()? {
            return Ok(q);
        }
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        if start == self.i {
            return Err(format!("expected a field name at {start}"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn value(&mut self) -> Result<String, String> {
        self.skip_space();
        if let Some(q) = self.quoted()? {
            return Ok(q);
        }
        let start = self.i;
        while self.i < self.s.len()
            && !self.s[self.i].is_ascii_whitespace()
            && self.s[self.i] != b','
        {
            self.i += 1;
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A string quoted with `"`, `/` or `|`, with Go's escapes for `"`.
    fn quoted(&mut self) -> Result<Option<String>, String> {
        let Some(&q) = self.s.get(self.i) else {
            return Ok(None);
        };
        if !matches!(q, b'"' | b'/' | b'|') {
            return Ok(None);
        }
        self.i += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            if c == q {
                return String::from_utf8(out).map(Some).map_err(|e| e.to_string());
            }
            if c == b'\\' && q == b'"' {
                let Some(&e) = self.s.get(self.i) else { break };
                self.i += 1;
                out.push(match e {
                    b'n' => b'\n',
                    b't' => b'\t',
                    other => other,
                });
                continue;
            }
            out.push(c);
        }
        Err("unterminated quoted string".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(parent: &'a str, labels: &'a HashMap<String, String>) -> Fields<'a> {
        Fields {
            name: "sha256:aa",
            parent,
            kind: "committed",
            labels,
        }
    }

    #[test]
    fn containerd_remote_lookup() {
        let f = Filters::parse(&[
            r#"labels."containerd.io/snapshot.ref"==sha256:aa,parent=="default/5/sha256:bb""#
                .to_string(),
        ])
        .unwrap();
        let labels = HashMap::from([(
            "containerd.io/snapshot.ref".to_string(),
            "sha256:aa".to_string(),
        )]);
        assert!(f.matches(&fields("default/5/sha256:bb", &labels)));
        assert!(!f.matches(&fields("default/6/sha256:bb", &labels)));
        assert!(!f.matches(&fields("default/5/sha256:bb", &HashMap::new())));
        let bottom = Filters::parse(&[
            r#"labels."containerd.io/snapshot.ref"==sha256:aa,parent=="""#.to_string(),
        ])
        .unwrap();
        assert!(bottom.matches(&fields("", &labels)));
        assert!(!bottom.matches(&fields("x", &labels)));
    }

    #[test]
    fn or_presence_and_not_equal() {
        let f = Filters::parse(&["kind==active".into(), "labels.a".into()]).unwrap();
        let a = HashMap::from([("a".to_string(), "1".to_string())]);
        assert!(f.matches(&fields("", &a)));
        assert!(!f.matches(&fields("", &HashMap::new())));
        let n = Filters::parse(&["name!=sha256:aa".into()]).unwrap();
        assert!(!n.matches(&fields("", &a)));
        assert!(Filters::parse(&["name~=x".into()]).is_err());
        assert!(Filters::parse(&[r#"labels."open==x"#.into()]).is_err());
        assert!(Filters::parse(&[]).unwrap().matches(&fields("", &a)));
    }
}
