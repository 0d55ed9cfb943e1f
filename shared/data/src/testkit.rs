//! Test-only builder of schema TOML texts, shared by this crate's unit tests so that each
//! test states only the sources and columns it is about. The text it writes is the plain
//! table form the docs use (`[[source]]`, `[[source.column]]`, one `key = value` a line),
//! so tests may still edit it with `str::replace`.

use std::fmt::Write;

/// A schema text keyed by `id`, built a source and a column at a time.
pub(crate) struct SchemaText(String);

impl SchemaText {
    /// `key = "id"` and nothing else yet.
    pub(crate) fn new() -> Self {
        SchemaText("key = \"id\"\n".to_owned())
    }

    /// Starts a `[[source]]` table; `options` are further `key = value` lines (or "").
    pub(crate) fn source(mut self, name: &str, path: &str, options: &str) -> Self {
        let _ = writeln!(
            self.0,
            "[[source]]\nname = \"{name}\"\npath = \"{path}\"\n{options}"
        );
        self
    }

    /// Adds columns without further keys to the last source: `spec` is white-space
    /// separated `name:type` pairs, e.g. `"id:id when:ignore n:numeric"`.
    pub(crate) fn columns(mut self, spec: &str) -> Self {
        for pair in spec.split_whitespace() {
            let (name, kind) = pair.split_once(':').expect("column spec is name:type");
            self = self.column(name, kind, "");
        }
        self
    }

    /// Adds one column to the last source; `keys` are further `key = value` lines (or "").
    pub(crate) fn column(mut self, name: &str, kind: &str, keys: &str) -> Self {
        let _ = writeln!(
            self.0,
            "[[source.column]]\nname = \"{name}\"\ntype = \"{kind}\"\n{keys}"
        );
        self
    }

    /// The TOML text.
    pub(crate) fn build(self) -> String {
        self.0
    }
}
