//! Records the source revision for certificates (`Software::grin`), unless
//! the builder already set `GRIN_GIT_COMMIT` (e.g. in a Docker build without
//! the .git directory).
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GRIN_GIT_COMMIT");
    if std::env::var_os("GRIN_GIT_COMMIT").is_some() {
        return;
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
    if let Some(commit) = git(&["rev-parse", "HEAD"]) {
        println!("cargo:rustc-env=GRIN_GIT_COMMIT={commit}");
    }
}
