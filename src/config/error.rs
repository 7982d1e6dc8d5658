//! Config errors that name the file, the line and the key, so an operator can fix them.

use std::fmt;

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

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
    root: Option<DeTable<'a>>,
}

/// A table's entry under `key`, with the span of the key.
fn entry<'r, 'a>(table: &'r DeTable<'a>, key: &str) -> Option<(Range<usize>, &'r Spanned<DeValue<'a>>)> {
    table.iter().find(|(k, _)| k.get_ref() == key).map(|(k, v)| (k.span(), v))
}

impl<'a> Locator<'a> {
    /// Indexes `source`; a source that does not parse locates nothing.
    pub fn new(source: &'a str) -> Self {
        Locator { source, root: DeTable::parse(source).ok().map(Spanned::into_inner) }
    }

    /// The 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.source.len());
        self.source.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// The line of the deepest part of `path` (`a[1].b.c`) that exists in the file.
    pub fn line(&self, path: &str) -> Option<usize> {
        let root = self.root.as_ref()?;
        let mut node: Option<&Spanned<DeValue<'a>>> = None;
        let mut best: Option<usize> = None;
        for segment in segments(path) {
            let found = match (segment, node) {
                (Segment::Key(key), None) => entry(root, key),
                (Segment::Key(key), Some(value)) => match value.get_ref() {
                    DeValue::Table(table) => entry(table, key),
                    _ => None,
                },
                (Segment::Index(i), Some(value)) => value.get_ref().get(i).map(|v| (v.span(), v)),
                (Segment::Index(_), None) => None,
            };
            let Some((span, value)) = found else { break };
            best = Some(self.line_of(span.start));
            node = Some(value);
        }
        best
    }

    /// The key path of the place a serde error points at: the key on that line, under the
    /// nearest table header above it.
    pub fn key_at(&self, offset: usize) -> String {
        let end = offset.min(self.source.len());
        let line_start = self.source[..end].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.source[end..].find('\n').map_or(self.source.len(), |i| end + i);
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
