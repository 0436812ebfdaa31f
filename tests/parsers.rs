//! The batch parsers (CSV, NDJSON, JSON envelope) fed arbitrary bytes, gzip of arbitrary bytes,
//! and the worst records that fit in a body: they never panic, and what they hold at once is
//! bounded by the per-record limits and the batch size, never by the input. Allocation is
//! measured by a counting global allocator (per thread, so parallel tests do not disturb it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use rolesync::ingest::{BatchQuery, Format, Limits, read_rows};
use std::io::{BufReader, Read};

#[global_allocator]
static METER: alloc_meter::Meter = alloc_meter::Meter;

/// What a parse may hold at once, whatever the input: a batch of rows (2 000 rows of bounded
/// fields), the reader's buffers and one record. Far below what the inputs below would cost
/// if they were buffered (tens of MB).
const BOUND: u64 = 8 << 20;

const FORMATS: [Format; 3] = [Format::Csv, Format::Ndjson, Format::Json];

/// Parses `input` as `format`, dropping the rows as they come (as the store would take them).
fn parse<R: Read>(format: Format, input: R) -> (Result<u64, String>, u64) {
    alloc_meter::measure(|| {
        let limits = Limits::with_max_rows(10_000_000);
        read_rows(
            format,
            BufReader::with_capacity(256 * 1024, input),
            &BatchQuery::default(),
            &limits,
            &mut |batch| {
                drop(batch);
                Ok(())
            },
        )
        .map(|s| s.rows)
        .map_err(|e| e.to_string())
    })
}

/// `head`, then `filler` repeated `n` times, then `tail`, made as it is read (never held).
struct Generated {
    head: Vec<u8>,
    filler: Vec<u8>,
    n: u64,
    tail: Vec<u8>,
    pos: u64,
}

impl Generated {
    fn new(head: &str, filler: &str, n: u64, tail: &str) -> Generated {
        Generated {
            head: head.into(),
            filler: filler.into(),
            n,
            tail: tail.into(),
            pos: 0,
        }
    }

    fn len(&self) -> u64 {
        self.head.len() as u64 + self.filler.len() as u64 * self.n + self.tail.len() as u64
    }

    fn byte(&self, at: u64) -> u8 {
        let h = self.head.len() as u64;
        let f = self.filler.len() as u64 * self.n;
        if at < h {
            self.head[at as usize]
        } else if at < h + f {
            self.filler[((at - h) % self.filler.len() as u64) as usize]
        } else {
            self.tail[(at - h - f) as usize]
        }
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len() - self.pos;
        let n = (buf.len() as u64).min(left) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = self.byte(self.pos + i as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The worst records that fit in a body: one field, line or element of tens of MB, in every
/// format. Each is refused (400) or rejected as its row, holding at most `BOUND`.
#[test]
fn the_largest_records_cost_a_bounded_amount_of_memory() {
    const BIG: u64 = 40 << 20;
    let header = "external_id,role_template,license_tier\n";
    // Each case: its name, format, input, and what the answer says.
    let cases: Vec<(&str, Format, Generated, &str)> = vec![
        (
            "csv quoted field of line breaks",
            Format::Csv,
            Generated::new(&format!("{header}A,Agent,X\n\""), "\n", BIG, "\",Agent,X\n"),
            "line 3: a record is larger than ingest.max_record_bytes",
        ),
        (
            "csv unquoted field",
            Format::Csv,
            Generated::new(header, "a", BIG, ",Agent,X\n"),
            "line 2: a record is larger than ingest.max_record_bytes",
        ),
        (
            "csv many columns",
            Format::Csv,
            Generated::new(header, ",", BIG, "\n"),
            "line 2: a record is larger than ingest.max_record_bytes",
        ),
        (
            "ndjson long line",
            Format::Ndjson,
            Generated::new("{\"external_id\":\"", "a", BIG, "\"}\n"),
            "Ok(1)",
        ),
        (
            "ndjson many lines of many keys",
            Format::Ndjson,
            Generated::new("", "{\"a\":1,\"b\":2,\"c\":3,\"d\":4}\n", BIG / 30, ""),
            "lack required fields",
        ),
        (
            "json long string",
            Format::Json,
            Generated::new("{\"assignments\":[{\"external_id\":\"", "a", BIG, "\"}]}"),
            "line 1: an element of assignments",
        ),
        (
            "json long mode",
            Format::Json,
            Generated::new("{\"mode\":\"", "m", BIG, "\",\"assignments\":[]}"),
            "line 1: an element of assignments",
        ),
        (
            "json deep nesting",
            Format::Json,
            Generated::new("{\"assignments\":[", "[", BIG, ""),
            "line 1: an element of assignments",
        ),
        (
            "json many keys in one object",
            Format::Json,
            Generated::new("{\"assignments\":[{", "\"k\":1,", BIG / 6, "\"z\":1}]}"),
            "line 1: an element of assignments",
        ),
    ];
    for (name, format, input, expected) in cases {
        let (result, peak) = parse(format, input);
        println!("{name}: peak {} KiB, {result:?}", peak / 1024);
        assert!(peak < BOUND, "{name}: held {peak} bytes");
        // Refused naming where the record starts, or taken with the record as its row's
        // rejection; never read to the end as one record.
        let answer = format!("{result:?}");
        assert!(answer.contains(expected), "{name}: {answer}");
    }
}

/// Millions of rows go through in batches: memory does not grow with the row count.
#[test]
fn many_rows_cost_a_bounded_amount_of_memory() {
    let input = Generated::new(
        "external_id,role_template,license_tier\n",
        "EMP-12345678,Queue Member,Standard Agent\n",
        1_000_000,
        "",
    );
    let (result, peak) = parse(Format::Csv, input);
    assert_eq!(result, Ok(1_000_000));
    println!("1 000 000 CSV rows: peak {} KiB", peak / 1024);
    assert!(peak < BOUND, "held {peak} bytes");
}

/// Text the parsers meet often: delimiters, quotes, braces, line breaks, BOM, NUL.
fn tokenish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b",".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b":".to_vec()),
        Just(b"\\u0000".to_vec()),
        Just(b"\0".to_vec()),
        Just(b"\xef\xbb\xbf".to_vec()),
        Just(b"\"external_id\"".to_vec()),
        Just(b"\"assignments\"".to_vec()),
        Just(b"external_id,role_template,license_tier".to_vec()),
        Just(b"Agent".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(token, 0..200).prop_map(|t| t.concat())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        // An integration test has no lib.rs beside it to persist failures next to.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary bytes: an answer (rows or an error), never a panic, bounded memory.
    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        for format in FORMATS {
            let (_, peak) = parse(format, bytes.as_slice());
            prop_assert!(peak < BOUND);
        }
    }

    /// Near-valid text, the interesting corner of arbitrary input.
    #[test]
    fn tokenish_text_never_panics_and_stays_bounded(bytes in tokenish()) {
        for format in FORMATS {
            let (_, peak) = parse(format, bytes.as_slice());
            prop_assert!(peak < BOUND);
        }
    }

    /// Gzip of arbitrary bytes, and arbitrary bytes as gzip, through a streaming decoder:
    /// decoded as the HTTP layer decodes, then parsed.
    #[test]
    fn gzip_streams_never_panic_and_stay_bounded(bytes in tokenish(), junk in proptest::collection::vec(any::<u8>(), 0..512)) {
        let compressed = gzip(&bytes);
        let mut corrupt = compressed.clone();
        if let Some(b) = corrupt.get_mut(compressed.len() / 2) {
            *b ^= 0x5a;
        }
        for input in [compressed, corrupt, junk.clone()] {
            for format in FORMATS {
                let (_, peak) = parse(format, flate2::read::GzDecoder::new(input.as_slice()));
                prop_assert!(peak < BOUND);
            }
        }
    }
}
