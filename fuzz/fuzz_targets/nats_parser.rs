//! Fuzz target for the broker's protocol parser: arbitrary bytes, fed in arbitrary chunks,
//! must never panic, never loop, and never consume more than it was given.
//!
//! Run: `cargo fuzz run nats_parser --sanitizer none` (stable) or with `RUSTC_BOOTSTRAP=1` for
//! AddressSanitizer.

#![no_main]

use bytes::BytesMut;
use cohort_nats_proto::Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so the fuzzer explores every split point.
    let Some((chunk, input)) = data.split_first() else { return };
    let chunk = usize::from(*chunk).max(1);
    let mut parser = Parser::new(256, 1024);
    let mut buf = BytesMut::new();
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match parser.parse(&mut buf) {
                Ok(Some(_)) => assert!(buf.len() < before, "an operation consumed nothing"),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
