//! Config errors that name the file, the line and the key, so an operator can fix them.

use std::fmt;

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, TableLike, Value};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; `None` when the problem has no place in the file (an unreadable file).
    pub line: Option<usize>,
    /// The key, as a dotted path such as `listeners[0].default_action.target_group`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.file, line, self.key, self.message),
            None if self.key.is_empty() => write!(f, "{}: {}", self.file, self.message),
            None => write!(f, "{}: {}: {}", self.file, self.key, self.message),
        }
    }
}

/// Every error found in one config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Finds where keys sit in the source text, to put line numbers on errors found after parsing.
pub struct Locator<'a> {
    source: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    /// The child under `key`, with the span of the key (or of the value).
    fn child(&self, key: &str) -> Option<(Node<'a>, Option<Range<usize>>)> {
        let table: &'a dyn TableLike = match *self {
            Node::Item(item) => item.as_table_like()?,
            Node::Table(table) => table,
            Node::Value(Value::InlineTable(table)) => table,
            Node::Value(_) => return None,
        };
        let (k, v) = table.get_key_value(key)?;
        Some((Node::Item(v), k.span().or_else(|| v.span())))
    }

    /// The element at `index` of an array or array of tables.
    fn element(&self, index: usize) -> Option<(Node<'a>, Option<Range<usize>>)> {
        match *self {
            Node::Item(Item::ArrayOfTables(tables)) => {
                let t = tables.get(index)?;
                Some((Node::Table(t), t.span()))
            }
            Node::Item(Item::Value(Value::Array(array))) | Node::Value(Value::Array(array)) => {
                let v = array.get(index)?;
                Some((Node::Value(v), v.span()))
            }
            _ => None,
        }
    }
}

impl<'a> Locator<'a> {
    /// Indexes `source`; a source that does not parse locates nothing.
    pub fn new(source: &'a str) -> Self {
        Locator {
            source,
            doc: ImDocument::parse(source).ok(),
        }
    }

    /// The 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.source.len());
        self.source.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The line of the deepest part of `path` (`a[1].b.c`) that exists in the file.
    pub fn line(&self, path: &str) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut node = Node::Item(doc.as_item());
        let mut best: Option<usize> = None;
        for segment in segments(path) {
            let found = match segment {
                Segment::Key(key) => node.child(key),
                Segment::Index(i) => node.element(i),
            };
            let Some((next, span)) = found else { break };
            if let Some(span) = span {
                best = Some(self.line_of(span.start));
            }
            node = next;
        }
        best
    }

    /// The key path of the place a serde error points at: the key on that line, under the
    /// nearest table header above it.
    pub fn key_at(&self, offset: usize) -> String {
        let end = offset.min(self.source.len());
        let line_start = self.source[..end].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.source[end..]
            .find('\n')
            .map_or(self.source.len(), |i| end + i);
        let line = &self.source[line_start..line_end];
        let key = match line.find('=') {
            Some(eq) if !line.trim_start().starts_with('[') => line[..eq].trim().to_string(),
            _ => String::new(),
        };
        let header = self.source[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
        match (header, key.is_empty()) {
            (Some(h), false) => format!("{h}.{key}"),
            (Some(h), true) => h,
            (None, _) => key,
        }
    }
}

enum Segment<'p> {
    Key(&'p str),
    Index(usize),
}

fn segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.split('.').flat_map(|part| {
        let mut out = Vec::new();
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                out.push(Segment::Index(i));
            }
        }
        out
    })
}
