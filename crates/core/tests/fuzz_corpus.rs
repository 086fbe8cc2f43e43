//! The fuzz corpus, replayed without cargo-fuzz: every committed input of
//! `fuzz/corpus/TARGET/` (the seeds, and each crash the fuzzer found, kept as a regression)
//! through the very target functions libFuzzer runs (fuzz/src/lib.rs, compiled here as a
//! module), so that CI checks them on the stable toolchain with no fuzzer installed.

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/src/lib.rs"]
mod targets;

/// Runs `target` on every file of `fuzz/corpus/{name}`, and fails naming each input that
/// panicked (a panic is how a target reports a broken property).
fn replay(name: &str, target: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(name);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} cannot be read: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(
        inputs.iter().any(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-"))),
        "{} has no seed (fuzz/seeds.py writes them)",
        dir.display()
    );
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| target(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{} of {} inputs of {name} broke a property: {failed:#?}", failed.len(), inputs.len());
}

#[test]
fn request_decoder_corpus() {
    replay("request_decoder", targets::request_decoder);
}

#[test]
fn chunked_body_corpus() {
    replay("chunked_body", targets::chunked_body);
}

#[test]
fn websocket_frames_corpus() {
    replay("websocket_frames", targets::websocket_frames);
}

#[test]
fn message_json_corpus() {
    replay("message_json", targets::message_json);
}

/// A native post must be the JSON object docs/protocol.md names, all of it valid JSON: an
/// array (which serde's derive would read as the struct) and invalid UTF-8 in a member the
/// chat does not read (which serde would skip unchecked) are 400, and nothing is stored.
/// Both were found by the message_json target.
#[test]
fn a_native_post_that_is_an_array_or_not_utf8_is_400() {
    use c10k_core::chat::{App, Config, Now, Outcome};
    use c10k_core::http::{Event, RequestDecoder};
    let app = App::new(Config::with_seed([7; 32]));
    let cases: [&[u8]; 3] = [br#"["hello", "ann"]"#, b"{\"body\": \"hi\", \"extra\": \"\xff\xfe\"}", br#"[{"body": "hi"}]"#];
    for body in cases {
        let mut decoder = RequestDecoder::new(app.limits());
        decoder.receive(&[targets::post_head(body.len()), body.to_vec()].concat());
        let Ok(Event::Request(request)) = decoder.next_event() else { panic!("a well-formed post") };
        let now = Now { instant: std::time::Instant::now(), unix_ms: 1_700_000_000_000 };
        match app.handle_request(request, now) {
            Outcome::Reply(response) => assert_eq!(response.status.0, 400, "{:?}", String::from_utf8_lossy(body)),
            other => panic!("{:?} is not a post, but the server goes on with it: {other:?}", String::from_utf8_lossy(body)),
        }
    }
}

/// Every way of cutting is exercised by the seeds' first bytes: one piece, pieces of 1-4
/// bytes, pieces of 1-64 bytes; and cutting loses or reorders nothing.
#[test]
fn cut_keeps_every_byte_in_order() {
    let input: Vec<u8> = (0..=255).collect();
    for seed in [0u8, 1, 2, 77, 254, 255] {
        let pieces = targets::cut(seed, &input);
        assert_eq!(pieces.concat(), input, "seed {seed}");
        let longest = pieces.iter().map(|p| p.len()).max().unwrap();
        match seed {
            0 => assert_eq!(pieces.len(), 1),
            s if s % 2 == 1 => assert!(longest <= 4, "seed {seed}: {longest}"),
            _ => assert!(longest <= 64 && pieces.len() > 1, "seed {seed}: {longest}"),
        }
    }
}
