//! Exports (DESIGN §2 "Exports"): a list's whole filtered, ordered result as CSV (RFC 4180, a
//! header row) or NDJSON, streamed as the database yields it.
//!
//! Two tasks per export. The reader owns a database connection and, in one read-only
//! transaction, fetches a cursor's batches and hands each to the writer (a channel of one
//! batch). The writer encodes (and gzips, at the fast level, when the client accepts it) and
//! sends chunks to the response body (a channel of [`IN_FLIGHT`] chunks). The database thus reads
//! batch n + 1 while batch n is written, and nothing runs further ahead of the client than a
//! batch and a few chunks, whatever the export's size. When the client goes away, the body is
//! dropped, the writer's next send fails and it ends, then the reader's next hand-over fails
//! and its transaction ends, and with it the cursor: the database does no more work for it.

use std::io::Write;
use std::rc::Rc;

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use bytes::Bytes;
use diesel::pg::Pg;
use diesel::{QueryResult, QueryableByName};
use diesel_async::AsyncPgConnection;
use flate2::write::GzEncoder;

use crate::auth::admission::{Ticket, Turn};
use crate::db::cancel::Checkout;
use crate::error::FieldError;

/// Chunks produced ahead of the client.
const IN_FLIGHT: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

/// What the client asked for: `format=` (`json`, `csv`, `ndjson`) wins over `Accept`; `None`
/// is the paged JSON answer.
pub fn negotiate(format: Option<&str>, req: &HttpRequest) -> Result<Option<Format>, FieldError> {
    match format {
        Some("json") => return Ok(None),
        Some("csv") => return Ok(Some(Format::Csv)),
        Some("ndjson") => return Ok(Some(Format::Ndjson)),
        Some(other) => {
            return Err(FieldError::new(
                "format",
                format!("'{other}' is not one of json, csv, ndjson"),
            ))
        }
        None => {}
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(media_types(accept).find_map(|media| match media {
        "text/csv" => Some(Format::Csv),
        "application/x-ndjson" => Some(Format::Ndjson),
        _ => None,
    }))
}

/// The media types (or codings) of an `Accept`-style header that are not refused with `q=0`,
/// lowercased names without parameters.
fn media_types(header: &str) -> impl Iterator<Item = &str> {
    header.split(',').filter_map(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().filter(|n| !n.is_empty())?;
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        (!refused).then_some(name)
    })
}

/// Whether the client accepts a gzip-coded body.
fn gzip_accepted(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .any(|v| media_types(v).any(|c| c.eq_ignore_ascii_case("gzip")))
}

/// The client is gone: the producer stops.
#[derive(Debug)]
pub struct Gone;

/// Where a producer writes its body.
pub struct Sink {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    gzip: Option<GzEncoder<Vec<u8>>>,
    /// The request's turn among its organization's requests that run: given back with the
    /// first rows, once the query's heavy part (a sort, a scan to the first match) is done.
    /// The rest of the body goes at the client's pace.
    turn: Option<Turn>,
}

impl Sink {
    /// Sends `bytes` (compressed when the client asked), waiting while the client is behind.
    pub async fn send(&mut self, bytes: Vec<u8>) -> Result<(), Gone> {
        self.turn = None;
        let out = match &mut self.gzip {
            None => bytes,
            Some(encoder) => {
                encoder.write_all(&bytes).map_err(|_| Gone)?;
                encoder.flush().map_err(|_| Gone)?;
                std::mem::take(encoder.get_mut())
            }
        };
        if out.is_empty() {
            return Ok(());
        }
        self.tx.send(Ok(Bytes::from(out))).await.map_err(|_| Gone)
    }

    /// Ends the body: the gzip trailer, if any.
    pub async fn finish(mut self) -> Result<(), Gone> {
        if let Some(encoder) = self.gzip.take() {
            let rest = encoder.finish().map_err(|_| Gone)?;
            self.tx
                .send(Ok(Bytes::from(rest)))
                .await
                .map_err(|_| Gone)?;
        }
        Ok(())
    }

    /// Ends the body with an error: the client sees a broken transfer, never a short file that
    /// looks whole.
    pub async fn fail(self) {
        let _ = self
            .tx
            .send(Err(std::io::Error::other("the export failed")))
            .await;
    }
}

/// The streamed answer: `produce` runs on its own task and writes the body into its [`Sink`].
fn respond<F, Fut>(req: &HttpRequest, format: Format, name: &str, produce: F) -> HttpResponse
where
    F: FnOnce(Sink) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let gzip = gzip_accepted(req);
    let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
    // The request's place among its organization's requests in flight is held until the last
    // byte is sent, or the client goes away; its turn to run, until the first rows are read.
    let ticket = req.extensions().get::<Rc<Ticket>>().cloned();
    let sink = Sink {
        tx,
        gzip: gzip.then(|| GzEncoder::new(Vec::new(), flate2::Compression::fast())),
        turn: ticket.as_ref().and_then(|ticket| ticket.take_turn()),
    };
    tokio::spawn(produce(sink));
    let body = futures_util::stream::unfold((rx, ticket), |(mut rx, ticket)| async move {
        rx.recv().await.map(|item| (item, (rx, ticket)))
    });
    let mut response = HttpResponse::Ok();
    response
        .content_type(format.content_type())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}.{}\"", format.extension()),
        ))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .insert_header((header::VARY, "Authorization, Accept, Accept-Encoding"));
    if gzip {
        response.insert_header((header::CONTENT_ENCODING, "gzip"));
    }
    response.streaming(body)
}

/// The future that opens an export's cursor.
pub type Opening<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = QueryResult<()>> + Send + 'a>>;

/// A list an export reads whole through a database cursor.
pub trait Source: Send + Sync + 'static {
    type Row: QueryableByName<Pg> + Send + 'static;

    /// The CSV header row: the record's fields, in order.
    const CSV_HEADER: &'static [&'static str];

    /// Opens the cursor ([`crate::db::cursor::declare`]), inside the export's transaction.
    fn declare<'a>(&'a self, conn: &'a mut AsyncPgConnection) -> Opening<'a>;

    /// `row` as one CSV record, its fields in [`Self::CSV_HEADER`]'s order.
    fn csv_record(row: &Self::Row, out: &mut csv::Writer<Vec<u8>>) -> csv::Result<()>;

    /// `row` as one NDJSON line's object.
    fn json(row: &Self::Row) -> impl serde::Serialize + '_;
}

/// `rows` in `format`, after the CSV header row when `first`.
fn encode<S: Source>(format: Format, rows: &[S::Row], first: bool) -> std::io::Result<Vec<u8>> {
    match format {
        Format::Ndjson => {
            let mut out = Vec::with_capacity(rows.len() * 400);
            for row in rows {
                serde_json::to_writer(&mut out, &S::json(row))?;
                out.push(b'\n');
            }
            Ok(out)
        }
        Format::Csv => {
            let mut out = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 250));
            if first {
                out.write_record(S::CSV_HEADER)?;
            }
            for row in rows {
                S::csv_record(row, &mut out)?;
            }
            out.into_inner().map_err(|err| err.into_error())
        }
    }
}

/// The streamed export of `source`, read on `conn` (which the export keeps until it ends).
pub fn stream<S: Source>(
    req: &HttpRequest,
    format: Format,
    name: &str,
    conn: Checkout,
    source: S,
) -> HttpResponse {
    respond(req, format, name, move |sink| {
        produce(conn, source, format, sink)
    })
}

/// What the reading side of an export hands the writing side.
enum Batch<R> {
    Rows(Vec<R>),
    /// Every row was read: the body may end.
    End,
}

/// Reads `source` a batch at a time in one read-only transaction (one snapshot), while another
/// task encodes and sends the batch before: the database reads batch n + 1 while batch n is
/// written. A client that goes away ends the writer, then the reader (at its next hand-over),
/// then the transaction and the cursor with it. A body that stops without its end is a broken
/// transfer, never a short file that looks whole.
async fn produce<S: Source>(mut conn: Checkout, source: S, format: Format, sink: Sink) {
    let (batches, mut received) = tokio::sync::mpsc::channel::<Batch<S::Row>>(1);
    let writer = {
        tokio::spawn(async move {
            let mut sink = sink;
            let mut first = true;
            while let Some(batch) = received.recv().await {
                let rows = match batch {
                    Batch::Rows(rows) => rows,
                    Batch::End => {
                        let _ = sink.finish().await;
                        return;
                    }
                };
                let bytes = match encode::<S>(format, &rows, first) {
                    Ok(bytes) => bytes,
                    Err(err) => {
                        tracing::warn!(error = %err, "export failed");
                        break;
                    }
                };
                first = false;
                if sink.send(bytes).await.is_err() {
                    tracing::debug!("export stopped: the client went away");
                    return;
                }
            }
            sink.fail().await;
        })
    };
    let read = conn
        .build_transaction()
        .read_only()
        .run(async |conn| {
            source.declare(conn).await?;
            loop {
                let rows: Vec<S::Row> = crate::db::cursor::fetch(conn).await?;
                let last = rows.len() < crate::db::cursor::BATCH;
                if batches.send(Batch::Rows(rows)).await.is_err() {
                    // The writer is gone: end the transaction (rolled back; it wrote nothing).
                    return Err(diesel::result::Error::RollbackTransaction);
                }
                if last {
                    return Ok(());
                }
            }
        })
        .await;
    match read {
        Ok(()) => {
            let _ = batches.send(Batch::End).await;
        }
        Err(diesel::result::Error::RollbackTransaction) => {}
        Err(err) => tracing::warn!(error = %err, "export failed"),
    }
    drop(batches);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lists_are_read_with_their_q_values() {
        let names: Vec<&str> =
            media_types("text/csv;q=0, application/x-ndjson ;q=0.5,*/*").collect();
        assert_eq!(names, ["application/x-ndjson", "*/*"]);
        assert_eq!(media_types("").count(), 0);
    }
}
