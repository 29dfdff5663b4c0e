//! What the pull writes: each row exactly as the server sent it (decimals as their digits, never
//! through a float), as CSV (the server's export columns) or NDJSON (the row's own JSON, without
//! `_links`); and the state that lets `--resume` continue after the last complete page.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Failure;
use crate::cli::FileFormat;

/// A row's fields in the order sent, each value as its raw JSON text.
pub struct Fields<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Fields<'de>, M::Error> {
                let mut fields = Vec::new();
                while let Some((key, value)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Ordered)
    }
}

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// A raw JSON value as a CSV cell: a string's text, a number's digits as sent, null as empty.
fn cell(raw: &RawValue) -> Result<Cow<'_, str>, Failure> {
    let text = raw.get();
    if text.starts_with('"') {
        serde_json::from_str::<String>(text)
            .map(Cow::Owned)
            .map_err(|e| Failure::Server(format!("a field the server sent does not parse: {e}")))
    } else if text == "null" {
        Ok(Cow::Borrowed(""))
    } else {
        Ok(Cow::Borrowed(text))
    }
}

/// Writes rows to the output, counting its bytes (what `--resume` truncates back to).
pub struct Sink {
    out: Box<dyn Write>,
    format: FileFormat,
    columns: &'static [&'static str],
    pub bytes: u64,
}

impl Sink {
    pub fn new(out: Box<dyn Write>, format: FileFormat, columns: &'static [&'static str]) -> Self {
        Sink {
            out,
            format,
            columns,
            bytes: 0,
        }
    }

    /// Continues a file of `bytes` bytes (a resumed pull): the header is already there.
    pub fn resumed(mut self, bytes: u64) -> Self {
        self.bytes = bytes;
        self
    }

    pub fn header(&mut self) -> Result<(), Failure> {
        if self.format == FileFormat::Csv {
            self.csv_record(self.columns.iter().map(|c| c.as_bytes()))?;
        }
        Ok(())
    }

    pub fn row(&mut self, row: &Fields<'_>) -> Result<(), Failure> {
        match self.format {
            FileFormat::Csv => {
                let mut cells = Vec::with_capacity(self.columns.len());
                for column in self.columns {
                    cells.push(match row.get(column) {
                        Some(raw) => cell(raw)?,
                        None => Cow::Borrowed(""),
                    });
                }
                self.csv_record(cells.iter().map(|c| c.as_bytes()))
            }
            FileFormat::Ndjson => {
                let mut line = String::from("{");
                for (key, value) in row.0.iter().filter(|(k, _)| k != "_links") {
                    if line.len() > 1 {
                        line.push(',');
                    }
                    line.push_str(&serde_json::to_string(key).map_err(io_failure)?);
                    line.push(':');
                    line.push_str(value.get());
                }
                line.push_str("}\n");
                self.write(line.as_bytes())
            }
        }
    }

    /// One RFC 4180 record (quoted where needed).
    fn csv_record<'c>(&mut self, cells: impl IntoIterator<Item = &'c [u8]>) -> Result<(), Failure> {
        let mut record = csv::Writer::from_writer(Vec::with_capacity(256));
        record.write_record(cells).map_err(io_failure)?;
        let bytes = record.into_inner().map_err(io_failure)?;
        self.write(&bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.out.write_all(bytes).map_err(io_failure)?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Everything written so far is on its way to the disk (a page boundary).
    pub fn flush(&mut self) -> Result<(), Failure> {
        self.out.flush().map_err(io_failure)
    }
}

fn io_failure(err: impl fmt::Display) -> Failure {
    Failure::Output(format!("writing the output: {err}"))
}

/// Where a pull stands after its last complete page (`FILE.pull-state`, next to the output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The first page's path and query: a resume must pull the same thing.
    pub start: String,
    pub format: String,
    /// The version the file shows (`as_of` and the total of the first page).
    pub version: String,
    /// The next page to read (path and query), or none: the pull is complete.
    pub next: Option<String>,
    pub rows: u64,
    /// The output's length after the last complete page.
    pub bytes: u64,
}

pub fn state_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".pull-state");
    PathBuf::from(name)
}

impl State {
    pub fn load(path: &Path) -> Result<Option<State>, Failure> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Failure::Usage(format!("{} is not a pull state ({e})", path.display()))
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(Failure::Output(format!(
                "reading {}: {err}",
                path.display()
            ))),
        }
    }

    /// Saved whole or not at all (written beside, then renamed over).
    pub fn save(&self, path: &Path) -> Result<(), Failure> {
        let temporary = path.with_extension("pull-state.new");
        let bytes = serde_json::to_vec(self).map_err(io_failure)?;
        std::fs::write(&temporary, bytes).map_err(io_failure)?;
        std::fs::rename(&temporary, path).map_err(io_failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An output the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn rows_keep_their_digits_in_both_formats() {
        let body = r#"{"id":"x","price":0.1000000000000000000000000000001,"n":12345678901234567890123,"d":null,"s":"a,\"b\"","_links":{"self":{"href":"h"}}}"#;
        let row: Fields = serde_json::from_str(body).unwrap();
        let out = Shared::default();
        let columns = &["id", "price", "n", "d", "s", "missing"];
        let mut csv = Sink::new(Box::new(out.clone()), FileFormat::Csv, columns);
        csv.header().unwrap();
        csv.row(&row).unwrap();
        assert_eq!(
            out.text(),
            "id,price,n,d,s,missing\n\
             x,0.1000000000000000000000000000001,12345678901234567890123,,\"a,\"\"b\"\"\",\n"
        );
        assert_eq!(csv.bytes as usize, out.text().len());
        let out = Shared::default();
        let mut json = Sink::new(Box::new(out.clone()), FileFormat::Ndjson, &[]);
        json.header().unwrap();
        json.row(&row).unwrap();
        assert_eq!(
            out.text(),
            "{\"id\":\"x\",\"price\":0.1000000000000000000000000000001,\
             \"n\":12345678901234567890123,\"d\":null,\"s\":\"a,\\\"b\\\"\"}\n"
        );
    }
}
