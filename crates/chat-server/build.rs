// The version `chat-server --version` prints: the same script as the gateway's (the
// workspace root's build.rs, which documents it).
include!("../../build.rs");
