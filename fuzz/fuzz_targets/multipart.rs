//! The multipart reader as the e-mail route configures it (`multer`, boundary taken from
//! the content type, a whole-stream size limit, the body arriving in chunks), on arbitrary
//! bytes: every stream ends in fields or an error, never a panic or a hang.
//!
//! Input layout: byte 0 picks the chunk size the body arrives in; up to the first `\n` after
//! it is the content type's boundary parameter; the rest is the body.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// Small so that the size limit itself is exercised.
const STREAM_LIMIT: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    let (boundary, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&b"X"[..], rest),
    };
    let content_type = format!(
        "multipart/form-data; boundary={}",
        String::from_utf8_lossy(boundary)
    );
    let Ok(boundary) = multer::parse_boundary(&content_type) else {
        return;
    };
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = futures_util::stream::iter(chunks);
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(STREAM_LIMIT));
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            let _ = (field.name(), field.file_name(), field.content_type());
            while let Ok(Some(_)) = field.chunk().await {}
        }
    });
});
