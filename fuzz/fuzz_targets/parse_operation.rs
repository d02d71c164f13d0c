//! The operation parser on arbitrary bytes: every body is either an operation or an
//! `Error`, never a panic. The first byte picks the parser, as the route would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webapi_gateway::edge::webapi::{parse_chat_operation, parse_get_messages, parse_request_chat};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let _ = parse_request_chat(body);
        }
        1 => {
            let _ = parse_chat_operation(body);
        }
        _ => {
            let _ = parse_get_messages(body);
        }
    }
});
