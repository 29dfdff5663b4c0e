//! Reading event files: NDJSON lines or CSV rows (by header), each with the line it starts on,
//! as `RawEvent`s or the reason a record cannot be read. A bad record never stops the reading.

use std::io::BufRead;

use super::event::RawEvent;

/// Longest accepted NDJSON line, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

/// Records of either format, each with the line number it starts on.
pub enum Records<R: BufRead> {
    Ndjson {
        input: R,
        line: u64,
        buffer: Vec<u8>,
    },
    Csv {
        reader: csv::Reader<R>,
        headers: Vec<String>,
        record: csv::StringRecord,
    },
}

impl<R: BufRead> Records<R> {
    pub fn new(input: R, format: Format) -> anyhow::Result<Self> {
        Ok(match format {
            Format::Ndjson => Records::Ndjson {
                input,
                line: 0,
                buffer: Vec::new(),
            },
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
                let headers = reader
                    .headers()
                    .map_err(|err| anyhow::anyhow!("reading the CSV header: {err}"))?
                    .iter()
                    .map(|h| h.trim().trim_start_matches('\u{feff}').to_owned())
                    .collect();
                Records::Csv {
                    reader,
                    headers,
                    record: csv::StringRecord::new(),
                }
            }
        })
    }

    /// The next record and its line; `Ok(None)` at the end; `Err` only when the input itself
    /// cannot be read (a bad record is an `Ok(Some((line, Err(reason))))`). Both formats' loops
    /// sit side by side, each borrowing its own state of the enum: that is why it is long.
    pub fn next_record(&mut self) -> anyhow::Result<Option<(u64, Result<RawEvent, String>)>> {
        match self {
            Records::Ndjson {
                input,
                line,
                buffer,
            } => loop {
                buffer.clear();
                *line += 1;
                let read = std::io::Read::take(&mut *input, MAX_LINE_BYTES as u64 + 1)
                    .read_until(b'\n', buffer)?;
                if read == 0 {
                    return Ok(None);
                }
                if buffer.len() > MAX_LINE_BYTES && buffer.last() != Some(&b'\n') {
                    // Skip the rest of the oversized line.
                    let mut rest = Vec::new();
                    input.read_until(b'\n', &mut rest)?;
                    let reason = format!("line is longer than {MAX_LINE_BYTES} bytes");
                    return Ok(Some((*line, Err(reason))));
                }
                let Ok(text) = std::str::from_utf8(buffer) else {
                    return Ok(Some((*line, Err("line is not valid UTF-8".to_owned()))));
                };
                let text = text.trim();
                if !text.is_empty() {
                    return Ok(Some((*line, RawEvent::from_json(text))));
                }
            },
            Records::Csv {
                reader,
                headers,
                record,
            } => loop {
                match reader.read_record(record) {
                    Ok(false) => return Ok(None),
                    Ok(true) => {
                        let line = record.position().map_or(0, |p| p.line());
                        if record.iter().all(|f| f.trim().is_empty()) {
                            continue;
                        }
                        if record.len() != headers.len() {
                            let reason = format!(
                                "has {} fields; the header has {}",
                                record.len(),
                                headers.len()
                            );
                            return Ok(Some((line, Err(reason))));
                        }
                        let mut raw = RawEvent::default();
                        for (name, value) in headers.iter().zip(record.iter()) {
                            raw.set(name, value);
                        }
                        return Ok(Some((line, Ok(raw))));
                    }
                    Err(err) if err.is_io_error() => return Err(err.into()),
                    Err(err) => {
                        let line = err.position().map_or(0, |p| p.line());
                        return Ok(Some((line, Err(format!("unreadable CSV record: {err}")))));
                    }
                }
            },
        }
    }
}
