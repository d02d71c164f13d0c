// Build script: the version `--version` prints, from git at build time.
//
// Sets `GIT_VERSION` for the crate: `git describe --always --dirty` of the checkout being
// built; without git or outside this repository's checkout (a source tarball, a container
// build context without `.git`) the `WEBAPI_GATEWAY_GIT_VERSION` environment variable (the
// Dockerfile sets it from a build argument), else `unknown`. Reruns when HEAD, the branch it
// names, the packed refs or the index change, and when that variable changes. Shared by the
// chat-server's build script (`include!`): it must not read anything specific to one crate.

use std::path::{Path, PathBuf};
use std::process::Command;

const ENV_FALLBACK: &str = "WEBAPI_GATEWAY_GIT_VERSION";

fn main() {
    println!("cargo:rerun-if-env-changed={ENV_FALLBACK}");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let version = from_git(&manifest_dir)
        .or_else(|| {
            std::env::var(ENV_FALLBACK)
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=GIT_VERSION={}", version.trim());
}

/// `git describe --always --dirty` when `dir` is inside this repository's own checkout.
fn from_git(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    // A tarball unpacked inside some other repository must not take that one's version.
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if !top.join("crates/chat-server/Cargo.toml").is_file() {
        return None;
    }
    let absolute = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            dir.join(p)
        }
    };
    // A worktree has its own HEAD and index (git-dir) and shares the refs (common dir).
    let git_dir = absolute(git(&["rev-parse", "--git-dir"])?);
    let common = absolute(git(&["rev-parse", "--git-common-dir"])?);
    let mut watched = vec![
        git_dir.join("HEAD"),
        git_dir.join("index"),
        common.join("packed-refs"),
    ];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(common.join(branch));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    git(&["describe", "--always", "--dirty"])
}
