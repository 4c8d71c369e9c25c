//! Builds the web app (or takes the prebuilt one named by `MAINLOOP_WEB_DIST`),
//! precompresses every file and writes `OUT_DIR/assets.rs`, the table the crate embeds.
//! Node.js is needed here only, never when the binary runs.

#[path = "src/content_type.rs"]
mod content_type;

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::SystemTime;
use std::{env, fs, io};

/// Vite's own floor (`^20.19.0 || >=22.12.0`); checked first so an old Node fails with a
/// sentence instead of a stack trace.
const MIN_NODE: (u32, u32) = (20, 19);

/// Everything the web build reads; a change to any of them rebuilds the app.
const WEB_INPUTS: &[&str] = &[
    "src",
    "public",
    "index.html",
    "docs.html",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
];

#[allow(clippy::print_stderr)] // a failing build script's stderr is what cargo shows
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/content_type.rs");
    println!("cargo:rerun-if-env-changed=MAINLOOP_WEB_DIST");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let root = manifest_dir
        .parent()
        .and_then(Path::parent)
        .ok_or("the crate is not inside the workspace's crates/ directory")?
        .to_path_buf();

    let dist = match env::var_os("MAINLOOP_WEB_DIST").filter(|v| !v.is_empty()) {
        // Relative to the workspace root: cargo runs build scripts in the crate's
        // directory, which is not where anyone types the variable.
        Some(dir) => {
            let dist = root.join(dir);
            println!("cargo:rerun-if-changed={}", dist.display());
            dist
        }
        None => build_web(&root.join("web"), &out_dir)?,
    };
    if !dist.join("index.html").is_file() {
        return Err(format!(
            "{} has no index.html; is it the web app's build output?",
            dist.display()
        ));
    }
    embed(&dist, &out_dir)
}

/// Runs `npm ci` when `node_modules` is stale, then `vite build` into `OUT_DIR`.
fn build_web(web: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    for input in WEB_INPUTS {
        println!("cargo:rerun-if-changed={}", web.join(input).display());
    }
    check_node()?;
    let lock = web.join("package-lock.json");
    let installed = web.join("node_modules").join(".package-lock.json");
    if modified(&installed) < modified(&lock) {
        npm(web, &["ci", "--no-audit", "--no-fund"])?;
    }
    let dist = out_dir.join("web-dist");
    let dist_arg = dist
        .to_str()
        .ok_or_else(|| format!("OUT_DIR is not UTF-8: {}", dist.display()))?;
    npm(
        web,
        &["run", "build", "--", "--outDir", dist_arg, "--emptyOutDir"],
    )?;
    Ok(dist)
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

const NEED_NODE: &str = "building mainloop needs Node.js 20.19 or newer and npm (for the web \
     app); install them, or set MAINLOOP_WEB_DIST to a prebuilt app (the output of \
     `npm run build` in web/)";

fn check_node() -> Result<(), String> {
    let npm_ok = Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let version = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let (Some(version), true) = (version, npm_ok) else {
        return Err(format!("npm or node was not found: {NEED_NODE}"));
    };
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (major, minor) {
        (Some(major), Some(minor)) if (major, minor) >= MIN_NODE => Ok(()),
        _ => Err(format!("found Node.js {version}: {NEED_NODE}")),
    }
}

fn npm(web: &Path, args: &[&str]) -> Result<(), String> {
    // npm's chatter goes to stderr: cargo shows it when the build fails, and our stdout
    // is reserved for `cargo:` directives.
    let status = Command::new("npm")
        .args(args)
        .current_dir(web)
        .stdout(Stdio::from(io::stderr()))
        .status()
        .map_err(|e| format!("running npm: {e}; {NEED_NODE}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`npm {}` in {} failed ({status}); its output is above",
            args.join(" "),
            web.display()
        ))
    }
}

/// One file of the app as the generated table will describe it.
struct File {
    path: String,
    source: PathBuf,
}

fn collect(dir: &Path, prefix: &str, files: &mut Vec<File>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| format!("{} has a non-UTF-8 name", entry.path().display()))?;
        let path = format!("{prefix}{name}");
        let kind = entry
            .file_type()
            .map_err(|e| format!("reading {}: {e}", entry.path().display()))?;
        if kind.is_dir() {
            collect(&entry.path(), &format!("{path}/"), files)?;
        } else {
            files.push(File {
                path,
                source: entry.path(),
            });
        }
    }
    Ok(())
}

/// Snapshots every file into `OUT_DIR/embed` with its compressed forms and writes the
/// table. The snapshot, not the source, is embedded, so the bytes always match the hash.
fn embed(dist: &Path, out_dir: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    collect(dist, "", &mut files)?;
    // Sorted, so the crate can binary-search by path.
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let embed_dir = out_dir.join("embed");
    let _ = fs::remove_dir_all(&embed_dir);
    fs::create_dir_all(&embed_dir).map_err(|e| format!("creating {}: {e}", embed_dir.display()))?;

    let mut table = String::from("&[\n");
    for (i, file) in files.iter().enumerate() {
        let raw = fs::read(&file.source)
            .map_err(|e| format!("reading {}: {e}", file.source.display()))?;
        let content_type = content_type::content_type(&file.path);
        let digest = Sha256::digest(&raw);
        let hash: String = digest[..16].iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        let raw_path = write(&embed_dir.join(format!("{i}")), &raw)?;
        let (gzip, brotli) = if content_type::compressible(content_type) {
            (gzip(&raw)?, brotli(&raw)?)
        } else {
            (Vec::new(), Vec::new())
        };
        // A compressed form that saves nothing is left out; the raw file is sent instead.
        let encoded = |bytes: &[u8], ext: &str| -> Result<String, String> {
            if bytes.is_empty() || bytes.len() >= raw.len() {
                return Ok("None".to_owned());
            }
            let path = write(&embed_dir.join(format!("{i}.{ext}")), bytes)?;
            // Each representation has its own strong validator (RFC 9110 §8.8.3).
            Ok(format!(
                "Some(crate::Encoded {{ bytes: include_bytes!({path:?}), etag: {:?} }})",
                format!("\"{hash}.{ext}\"")
            ))
        };
        let gzip = encoded(&gzip, "gz")?;
        let brotli = encoded(&brotli, "br")?;
        let _ = writeln!(
            table,
            "    crate::Asset {{ path: {:?}, content_type: {content_type:?}, raw: include_bytes!({raw_path:?}), etag: {:?}, gzip: {gzip}, brotli: {brotli} }},",
            file.path,
            format!("\"{hash}\""),
        );
    }
    table.push_str("]\n");
    write(&out_dir.join("assets.rs"), table.as_bytes())?;
    Ok(())
}

/// Writes `bytes` to `path` and returns the path as a string for `include_bytes!`.
fn write(path: &Path, bytes: &[u8]) -> Result<String, String> {
    fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}

fn gzip(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(raw)
        .and_then(|()| encoder.finish())
        .map_err(|e| format!("gzip: {e}"))
}

fn brotli(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: 11,
        lgwin: 22,
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &raw[..], &mut out, &params).map_err(|e| format!("brotli: {e}"))?;
    Ok(out)
}
