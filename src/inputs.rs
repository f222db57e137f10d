//! Edit inputs as bounded streams. Every input — a local path, an https
//! URL, a blob of our own storage, a `data:` URI — becomes a file on disk
//! whose size and real type are checked before any memory is reserved or
//! any request is sent: local files are used in place, everything else is
//! downloaded (capped, streamed) to a private temp file that is deleted
//! when the call ends. The request body then streams those files as
//! base64 (`gemini::request` builds it), so no input is ever held whole, and a retry
//! can read them again.
//!
//! The same tools are reachable over HTTP, so inputs are checked: paths
//! only under allowed directories (canonicalised, so `..` and symlinks
//! cannot escape), URLs only over https to public addresses — checked
//! after DNS resolution and again on every redirect, with the connection
//! pinned to the checked address.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::extract::sniff::{self, ImageFormat};
use crate::gemini::InlineFile;
use crate::memory::{Budget, Reservation};
use crate::store::Store;
use crate::store::records::{ImageId, ImageRecord};

/// What inputs may be.
#[derive(Debug, Clone)]
pub struct InputRules {
    /// Canonical directories local paths must be under.
    pub allowed_dirs: Vec<PathBuf>,
    /// Whether `allowed_dirs` applies (always over HTTP; over stdio only
    /// when directories were configured).
    pub enforce_dirs: bool,
    /// Whether a path into the local output folder is an input (stdio: the
    /// user's own images). Over HTTP every caller's images share that
    /// folder, so earlier images are named by `imageId` instead.
    pub output_folder_by_path: bool,
    /// `host` or `host:port` entries allowed even when private, and over
    /// plain http.
    pub allow_hosts: Vec<String>,
    pub max_input_bytes: u64,
    pub max_total_bytes: u64,
    pub temp_dir: PathBuf,
    pub download_timeout: Duration,
    pub max_redirects: usize,
}

/// One answer for a URL into the server's container that may not be read:
/// missing, or a SAS that is absent, expired, forged or not for it.
const OWN_URL_REFUSED: &str = "not found, or the URL's SAS does not allow reading it (pass the imageId of an image this server made instead)";

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The same answer whether the file is missing, unreadable or outside
    /// the allowed directories, so a caller cannot probe the host's files;
    /// the log says which.
    #[error(
        "{what} is not a readable file inside the directories this server may read; its operator allows folders with --allowed-dir (NANO_BANANA_ALLOWED_DIRS)"
    )]
    PathNotAllowed { what: String },
    #[error("{what} cannot be read: {reason}")]
    Unreadable { what: String, reason: String },
    #[error("{what} is {size} bytes; the limit is {cap} bytes per input (--max-input-bytes)")]
    TooLarge { what: String, size: u64, cap: u64 },
    #[error("the inputs add up to more than {cap} bytes (--max-total-input-bytes)")]
    TotalTooLarge { cap: u64 },
    #[error("{what} is not a PNG, JPEG, WebP, GIF or HEIC image")]
    NotAnImage { what: String },
    #[error("{what} is HEIC, which {model} does not accept; convert it to PNG or JPEG")]
    Heic { what: String, model: String },
    #[error(
        "{what}: only https URLs are accepted (and the configured storage endpoint); allow a host explicitly with --allow-url-host"
    )]
    Scheme { what: String },
    #[error(
        "refusing {what}: its host is not a public internet address; the server's operator can allow a host with --allow-url-host"
    )]
    Blocked {
        what: String,
        host: String,
        ip: IpAddr,
        kind: &'static str,
    },
    #[error("{what}: too many redirects (more than {0})", .max)]
    Redirects { what: String, max: usize },
    #[error("downloading {what} failed: {reason}")]
    Download { what: String, reason: String },
    #[error("{n} input images given; {model} takes at most {max}")]
    TooMany { n: usize, max: usize, model: String },
    #[error("{what}: {reason}")]
    DataUri { what: String, reason: String },
    #[error(
        "server busy: {what} needs {need} bytes of temp disk and the inputs of other calls hold the rest of --max-temp-bytes ({cap}); retry in a few seconds"
    )]
    DiskBusy { what: String, need: u64, cap: u64 },
    #[error(
        "server busy: {0} calls' inputs are being fetched and this one waited {1} s for its turn; retry in a few seconds"
    )]
    PrepareBusy(usize, u64),
}

/// Calls whose inputs are fetched or decoded at once: each holds a read
/// buffer, a decode buffer and, for a download, a connection's buffers
/// (~1 MiB at most), outside the calls budget, which is taken after.
pub const PREPARE_AT_ONCE: usize = 4;
/// How long a call waits for its turn to prepare inputs.
pub const PREPARE_WAIT: Duration = Duration::from_secs(60);
/// Input temp files older than this at start-up were left by a process
/// that died (see `store::local::STALE_AGE`).
pub const STALE_TEMP_AGE: Duration = crate::store::local::STALE_AGE;
const TEMP_PREFIX: &str = ".nano-banana-input-";

/// Remove input temp files a crashed process left in `dir`.
pub fn remove_stale_temp_files(dir: &Path) {
    let ours = |n: &str| n.starts_with(TEMP_PREFIX);
    let removed = crate::store::local::remove_stale(dir, ours, STALE_TEMP_AGE);
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed input temp files left by an earlier run");
    }
}

/// Deletes a temp file when the call is over.
#[derive(Debug)]
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An input ready to stream: a readable file of known size and type.
#[derive(Debug)]
pub struct Prepared {
    /// The name every read uses: `/proc/self/fd/N` of `_held` where the
    /// system has it, so each attempt reads the file that was checked even
    /// if its name has since been pointed elsewhere.
    pub path: PathBuf,
    pub len: u64,
    pub format: ImageFormat,
    _held: Option<std::fs::File>,
    // Field order matters: the file goes before its disk reservation.
    _temp: Option<TempFile>,
    _disk: Option<Reservation>,
}

impl Prepared {
    /// The file as Gemini's request sends it (the temp file, if any, stays
    /// with `self` and must outlive the request).
    pub fn inline(&self) -> InlineFile {
        InlineFile {
            path: self.path.clone(),
            len: self.len,
            mime: self.format.mime(),
        }
    }
}

pub struct Fetcher {
    pub rules: InputRules,
    pub store: Arc<Store>,
    /// Temp disk for inputs, paid before a byte is written (try only).
    pub disk: Budget,
    /// Turns to prepare inputs (`PREPARE_AT_ONCE`).
    pub preparing: Arc<tokio::sync::Semaphore>,
}

/// A shortened form of an input spec for messages (no query strings, no
/// data).
pub fn describe(spec: &str) -> String {
    if spec.starts_with("data:") {
        let head: String = spec.chars().take_while(|&c| c != ',').take(40).collect();
        return format!("{head},…");
    }
    let cut = spec.find('?').unwrap_or(spec.len());
    let s: String = spec[..cut].chars().take(200).collect();
    if cut < spec.len() {
        format!("{s}?…")
    } else {
        s
    }
}

impl Fetcher {
    /// Turn one input spec into a checked file.
    pub async fn prepare(&self, spec: &str) -> Result<Prepared, InputError> {
        let what = describe(spec);
        let spec = spec.trim();
        if let Some(rest) = spec.strip_prefix("data:") {
            return self.load_data_uri(rest, &what).await;
        }
        if spec.starts_with("file://") {
            let path = url::Url::parse(spec)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| InputError::Unreadable {
                    what: what.clone(),
                    reason: "not a valid file URL".into(),
                })?;
            return self.load_path(&path, &what).await;
        }
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let url = url::Url::parse(spec).map_err(|e| InputError::Download {
                what: what.clone(),
                reason: e.to_string(),
            })?;
            // A URL into this server's own container: with the account
            // key, only with a read SAS this server signed for that blob,
            // unexpired (checked here, before any request). Then, and with
            // other credentials, it is fetched as given, with no
            // credential of the server's: Azure checks the SAS too, so a
            // caller reads only what it could read without us. Images by
            // handle (`imageId`) are read with the server's credential.
            let mut own = false;
            if let Store::Azure(az) = &*self.store
                && let Some(blob) = az.blob_name_from_url(&url)
            {
                if let Err(why) = az.check_own_url(&url, &blob) {
                    tracing::warn!(input = %what, reason = %why, "own-container URL refused");
                    return Err(InputError::Download {
                        what: what.clone(),
                        reason: OWN_URL_REFUSED.into(),
                    });
                }
                own = true;
            }
            return self.download(url, &what, own).await;
        }
        self.load_path(Path::new(spec), &what).await
    }

    /// The blob of an image this server stored (used by continue_editing).
    pub async fn load_stored(
        &self,
        blob_name: &str,
        path: Option<&Path>,
    ) -> Result<Prepared, InputError> {
        match (&*self.store, path) {
            (Store::Local(_), Some(p)) => {
                // Our own output folder is always allowed.
                let p = PathBuf::from(p);
                check_file(&p, blob_name, self.rules.max_input_bytes, None).await
            }
            _ => self.load_own_blob(blob_name, blob_name).await,
        }
    }

    /// The recorded image `id` names, read in a prepare turn (a record is
    /// at most `store::records::MAX_RECORD_BYTES`, inside what a turn may
    /// hold). `Ok(None)` when this server's storage has no such record.
    pub async fn find_image(
        &self,
        id: &ImageId,
    ) -> Result<Option<(ImageRecord, crate::store::Stored)>, InputError> {
        let _turn = self.turn().await?;
        let what = || format!("image {id}");
        let rec = self
            .store
            .get_record(id)
            .await
            .map_err(|e| InputError::Unreadable {
                what: what(),
                reason: e.to_string(),
            })?;
        let Some(rec) = rec else { return Ok(None) };
        let at = self
            .store
            .locate(&rec)
            .await
            .map_err(|e| InputError::Unreadable {
                what: what(),
                reason: e.to_string(),
            })?;
        Ok(Some((rec, at)))
    }

    /// Wait for one of the `PREPARE_AT_ONCE` turns.
    async fn turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, InputError> {
        let started = std::time::Instant::now();
        tokio::time::timeout(PREPARE_WAIT, Arc::clone(&self.preparing).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(InputError::PrepareBusy(
                PREPARE_AT_ONCE,
                started.elapsed().as_secs(),
            ))
    }

    async fn load_path(&self, path: &Path, what: &str) -> Result<Prepared, InputError> {
        if !self.rules.enforce_dirs {
            // stdio with no directories configured: the user's own files.
            let canon =
                tokio::fs::canonicalize(path)
                    .await
                    .map_err(|e| InputError::Unreadable {
                        what: what.to_string(),
                        reason: e.to_string(),
                    })?;
            return check_file(&canon, what, self.rules.max_input_bytes, None).await;
        }
        let refused = |reason: &str| {
            tracing::warn!(input = %what, reason, "input path refused");
            InputError::PathNotAllowed {
                what: what.to_string(),
            }
        };
        let canon = match tokio::fs::canonicalize(path).await {
            Ok(c) => c,
            Err(e) => return Err(refused(&e.to_string())),
        };
        let mut dirs = self.rules.allowed_dirs.clone();
        let mut except = None;
        if let Store::Local(l) = &*self.store {
            if self.rules.output_folder_by_path {
                dirs.push(l.dir().to_path_buf());
            } else if canon.starts_with(l.dir()) {
                // Even when an allowed directory contains it.
                return Err(refused("in the output folder, which is no input over HTTP"));
            } else {
                except = Some(l.dir());
            }
        }
        if !dirs.iter().any(|d| canon.starts_with(d)) {
            return Err(refused(if dirs.is_empty() {
                "no --allowed-dir is configured"
            } else {
                "outside the allowed directories"
            }));
        }
        let within = Within {
            dirs: &dirs,
            except,
        };
        match check_file(&canon, what, self.rules.max_input_bytes, Some(within)).await {
            Err(InputError::PathNotAllowed { .. }) => Err(refused(
                "the name pointed outside the allowed directories when opened",
            )),
            Err(InputError::Unreadable { reason, .. }) => Err(refused(&reason)),
            other => other,
        }
    }

    fn temp_path(&self) -> PathBuf {
        let id: u64 = rand::random();
        self.rules.temp_dir.join(format!("{TEMP_PREFIX}{id:016x}"))
    }

    /// Temp disk for `bytes`, or why not.
    fn disk_for(&self, bytes: u64, what: &str) -> Result<Reservation, InputError> {
        self.disk
            .try_reserve(bytes)
            .map_err(|_| InputError::DiskBusy {
                what: what.to_string(),
                need: bytes,
                cap: self.disk.config().total_bytes,
            })
    }

    async fn load_data_uri(&self, rest: &str, what: &str) -> Result<Prepared, InputError> {
        let err = |reason: &str| InputError::DataUri {
            what: what.to_string(),
            reason: reason.to_string(),
        };
        let (meta, data) = rest.split_once(',').ok_or_else(|| err("missing ','"))?;
        if !meta.ends_with(";base64") {
            return Err(err("only base64 data: URIs are accepted"));
        }
        let max_b64 = self.rules.max_input_bytes.div_ceil(3) * 4 + 4;
        if data.len() as u64 > max_b64 {
            return Err(InputError::TooLarge {
                what: what.to_string(),
                size: data.len() as u64 / 4 * 3,
                cap: self.rules.max_input_bytes,
            });
        }
        let disk = self.disk_for(data.len() as u64 / 4 * 3, what)?;
        let tmp = TempFile(self.temp_path());
        let mut file = create_private(&tmp.0)
            .await
            .map_err(|e| err(&e.to_string()))?;
        // Decode in slices so the decoded copy is never whole in memory.
        let clean: &[u8] = data.as_bytes();
        const STEP: usize = 64 << 10;
        let mut buf = vec![0u8; STEP / 4 * 3];
        let mut i = 0;
        while i < clean.len() {
            let end = (i + STEP).min(clean.len());
            let n = base64::engine::general_purpose::STANDARD
                .decode_slice(&clean[i..end], &mut buf)
                .map_err(|_| err("the base64 data is not valid"))?;
            file.write_all(&buf[..n])
                .await
                .map_err(|e| err(&e.to_string()))?;
            i = end;
        }
        file.flush().await.map_err(|e| err(&e.to_string()))?;
        drop(file);
        let mut p = check_file(&tmp.0, what, self.rules.max_input_bytes, None).await?;
        p._temp = Some(tmp);
        p._disk = Some(disk);
        Ok(p)
    }

    async fn load_own_blob(&self, name: &str, what: &str) -> Result<Prepared, InputError> {
        let Store::Azure(az) = &*self.store else {
            return Err(InputError::Unreadable {
                what: what.to_string(),
                reason: "not in this server's storage".into(),
            });
        };
        let stream = az
            .get_stream(name)
            .await
            .map_err(|e| download_err(what, e.to_string()))?;
        let expected = self.rules.max_input_bytes;
        self.save_capped(stream.map(|c| c.map_err(|e| e.to_string())), expected, what)
            .await
    }

    /// Write a download to a private temp file, refusing it once it passes
    /// the per-input cap, then check it like any local file.
    async fn save_capped(
        &self,
        mut stream: impl futures::Stream<Item = Result<Bytes, String>> + Unpin,
        expected: u64,
        what: &str,
    ) -> Result<Prepared, InputError> {
        // The declared size (or the cap) is paid before a byte is written.
        let disk = self.disk_for(expected.min(self.rules.max_input_bytes), what)?;
        let tmp = TempFile(self.temp_path());
        let mut file = create_private(&tmp.0)
            .await
            .map_err(|e| download_err(what, e.to_string()))?;
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| download_err(what, e))?;
            total += chunk.len() as u64;
            if total > self.rules.max_input_bytes {
                return Err(InputError::TooLarge {
                    what: what.to_string(),
                    size: total,
                    cap: self.rules.max_input_bytes,
                });
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| download_err(what, e.to_string()))?;
        }
        file.flush()
            .await
            .map_err(|e| download_err(what, e.to_string()))?;
        drop(file);
        let mut p = check_file(&tmp.0, what, self.rules.max_input_bytes, None).await?;
        p._temp = Some(tmp);
        p._disk = Some(disk);
        Ok(p)
    }

    fn host_allowed(&self, url: &url::Url) -> bool {
        let host = url.host_str().unwrap_or("");
        let with_port = format!("{host}:{}", url.port_or_known_default().unwrap_or(0));
        self.rules
            .allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host) || h.eq_ignore_ascii_case(&with_port))
    }

    /// Check a URL and resolve it to one address it may be fetched from.
    /// `own_storage`: the URL is on the storage endpoint the operator
    /// configured, which may be http and private (an emulator, a private
    /// endpoint).
    async fn vet(
        &self,
        url: &url::Url,
        what: &str,
        own_storage: bool,
    ) -> Result<SocketAddr, InputError> {
        let allowed = own_storage || self.host_allowed(url);
        if url.scheme() != "https" && !(url.scheme() == "http" && allowed) {
            return Err(InputError::Scheme {
                what: what.to_string(),
            });
        }
        let host = url.host_str().unwrap_or("").to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        // An IP literal is its own address (the host string of an IPv6 one
        // keeps its brackets, which no resolver takes).
        let literal = match url.host() {
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            _ => None,
        };
        let addrs: Vec<SocketAddr> = match literal {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| InputError::Download {
                    what: what.to_string(),
                    reason: format!("cannot resolve {host}: {e}"),
                })?
                .collect(),
        };
        let first = *addrs.first().ok_or_else(|| InputError::Download {
            what: what.to_string(),
            reason: format!("{host} has no addresses"),
        })?;
        if !allowed {
            // Every address must be public: a name that resolves to both a
            // public and a private address could be switched between them.
            for a in &addrs {
                if let Some(kind) = forbidden_kind(a.ip()) {
                    // The caller learns only that it was refused; the
                    // address and its class are for the operator.
                    tracing::warn!(input = %what, %host, ip = %a.ip(), kind, "input URL refused: not a public address");
                    return Err(InputError::Blocked {
                        what: what.to_string(),
                        host,
                        ip: a.ip(),
                        kind,
                    });
                }
            }
        }
        Ok(first)
    }

    async fn download(
        &self,
        mut url: url::Url,
        what: &str,
        own_storage: bool,
    ) -> Result<Prepared, InputError> {
        let dl = |reason: String| InputError::Download {
            what: what.to_string(),
            reason,
        };
        // Storage does not redirect; a redirect from it is followed by no
        // one (a hop elsewhere would be vetted as any other URL, but there
        // is nothing legitimate to follow).
        let max_redirects = if own_storage {
            0
        } else {
            self.rules.max_redirects
        };
        let mut redirects = 0;
        let resp = loop {
            let addr = self.vet(&url, what, own_storage).await?;
            let host = url.host_str().unwrap_or("").to_string();
            // Pinned to the vetted address; redirects are followed by hand
            // so each hop is vetted too.
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // A proxy would resolve the name again, undoing the pin.
                .no_proxy()
                .resolve(&host, addr)
                .connect_timeout(Duration::from_secs(10))
                .timeout(self.rules.download_timeout)
                .build()
                .map_err(|e| dl(e.to_string()))?;
            let resp = client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| dl(short_reqwest(&e)))?;
            if resp.status().is_redirection() {
                redirects += 1;
                if redirects > max_redirects {
                    return Err(InputError::Redirects {
                        what: what.to_string(),
                        max: max_redirects,
                    });
                }
                let loc = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| dl("redirect without a location".into()))?;
                url = url.join(loc).map_err(|e| dl(e.to_string()))?;
                continue;
            }
            if !resp.status().is_success() {
                if own_storage {
                    // Missing, or a SAS that is absent, expired or not
                    // ours: the same answer, which Azure gives anyone.
                    return Err(dl(format!(
                        "HTTP {}: {OWN_URL_REFUSED}",
                        resp.status().as_u16()
                    )));
                }
                return Err(dl(format!("HTTP {}", resp.status())));
            }
            break resp;
        };
        if let Some(n) = resp.content_length()
            && n > self.rules.max_input_bytes
        {
            return Err(InputError::TooLarge {
                what: what.to_string(),
                size: n,
                cap: self.rules.max_input_bytes,
            });
        }
        // hyper stops a body at its Content-Length, so that is what the
        // file can grow to; without one, the cap.
        let expected = resp.content_length().unwrap_or(self.rules.max_input_bytes);
        let stream = resp
            .bytes_stream()
            .map(|c| c.map_err(|e| short_reqwest(&e)));
        self.save_capped(stream, expected, what).await
    }

    /// Prepare every input, enforcing the per-model count and the total cap.
    pub async fn prepare_all(
        &self,
        specs: &[String],
        model: &str,
    ) -> Result<Vec<Prepared>, InputError> {
        let info = crate::gemini::models::info(model);
        if specs.len() > info.max_inputs {
            return Err(InputError::TooMany {
                n: specs.len(),
                max: info.max_inputs,
                model: model.to_string(),
            });
        }
        let _turn = self.turn().await?;
        let mut out = Vec::with_capacity(specs.len());
        let mut total = 0;
        for s in specs {
            let p = self.prepare(s).await?;
            if p.format == ImageFormat::Heic && !info.takes_heic {
                return Err(InputError::Heic {
                    what: describe(s),
                    model: model.to_string(),
                });
            }
            total += p.len;
            if total > self.rules.max_total_bytes {
                return Err(InputError::TotalTooLarge {
                    cap: self.rules.max_total_bytes,
                });
            }
            out.push(p);
        }
        Ok(out)
    }
}

fn download_err(what: &str, reason: String) -> InputError {
    InputError::Download {
        what: what.to_string(),
        reason,
    }
}

fn short_reqwest(e: &reqwest::Error) -> String {
    let base = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(s) => format!("{base}: {s}"),
        None => base.to_string(),
    }
}

async fn create_private(path: &Path) -> std::io::Result<tokio::fs::File> {
    let mut o = tokio::fs::OpenOptions::new();
    o.write(true).create_new(true).mode(0o600);
    o.open(path).await
}

/// A regular file within the size cap whose first bytes are an image,
/// checked through the handle it stays open by (see [`Prepared::path`]).
/// With `within`, the file the handle reaches must be under one of those
/// directories: a name swapped for a symlink after it was resolved is
/// caught here, and later reads cannot be redirected.
/// Where an opened file must really be: under one of `dirs`, and not
/// under `except` (the output folder over HTTP).
#[derive(Clone, Copy)]
struct Within<'a> {
    dirs: &'a [PathBuf],
    except: Option<&'a Path>,
}

impl Within<'_> {
    fn holds(&self, real: &Path) -> bool {
        self.dirs.iter().any(|d| real.starts_with(d))
            && !self.except.is_some_and(|e| real.starts_with(e))
    }
}

async fn check_file(
    path: &Path,
    what: &str,
    cap: u64,
    within: Option<Within<'_>>,
) -> Result<Prepared, InputError> {
    let unreadable = |reason: String| InputError::Unreadable {
        what: what.to_string(),
        reason,
    };
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| unreadable(e.to_string()))?;
    let held_at = held_path(&f);
    if let Some(within) = within {
        let real = match &held_at {
            Some(p) => tokio::fs::read_link(p).await.ok(),
            None => tokio::fs::canonicalize(path).await.ok(),
        };
        if !real.is_some_and(|r| within.holds(&r)) {
            return Err(InputError::PathNotAllowed {
                what: what.to_string(),
            });
        }
    }
    let meta = f.metadata().await.map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("not a regular file".into()));
    }
    if meta.len() > cap {
        return Err(InputError::TooLarge {
            what: what.to_string(),
            size: meta.len(),
            cap,
        });
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        let k = f
            .read(&mut head[n..])
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let format = sniff::sniff(&head[..n]).ok_or_else(|| InputError::NotAnImage {
        what: what.to_string(),
    })?;
    let (path, held) = match held_at {
        Some(p) => (p, Some(f.into_std().await)),
        None => (path.to_path_buf(), None),
    };
    Ok(Prepared {
        path,
        len: meta.len(),
        format,
        _held: held,
        _temp: None,
        _disk: None,
    })
}

/// The name that reopens exactly this open file (Linux: `/proc/self/fd/N`,
/// a new, independent handle on the same file), if the system has one.
fn held_path(f: &tokio::fs::File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd as _;
    let p = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    std::fs::symlink_metadata(&p).is_ok().then_some(p)
}

/// Why an address must not be fetched, if it must not. IPv4: everything
/// but public unicast (private, loopback, link-local, shared, benchmarking,
/// documentation and the IETF protocol block are refused). IPv6: only
/// global unicast (2000::/3) outside its special blocks; the forms that
/// carry an IPv4 address (mapped, compatible, 6to4) are judged by it.
pub fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(v4: std::net::Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    if v4.is_loopback() {
        Some("loopback")
    } else if o[0] == 169 && o[1] == 254 {
        Some("link-local (cloud metadata)")
    } else if v4.is_private() {
        Some("private")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some("shared (carrier-grade NAT)")
    } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || o[0] == 0 {
        Some("non-routable")
    } else if o[0] == 198 && (o[1] == 18 || o[1] == 19) {
        Some("benchmarking")
    } else if (o[0], o[1], o[2]) == (192, 0, 0) {
        Some("IETF protocol assignments")
    } else if matches!(
        (o[0], o[1], o[2]),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
    ) {
        Some("documentation")
    } else if (o[0], o[1], o[2]) == (192, 88, 99) {
        Some("6to4 relay")
    } else if o[0] >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn forbidden_v6(v6: std::net::Ipv6Addr) -> Option<&'static str> {
    let s = v6.segments();
    if let Some(v4) = v6.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    if v6.is_loopback() {
        return Some("loopback");
    }
    if v6.is_unspecified() || v6.is_multicast() {
        return Some("non-routable");
    }
    if s[..6].iter().all(|&x| x == 0) {
        // IPv4-compatible (::a.b.c.d, deprecated): some stacks still route
        // it to the IPv4 address.
        return forbidden_v4(std::net::Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ))
        .or(Some("IPv4-compatible"));
    }
    if s[0] & 0xffc0 == 0xfe80 {
        return Some("link-local");
    }
    if s[0] & 0xffc0 == 0xfec0 {
        return Some("site-local");
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return Some("private (unique local)");
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64's well-known prefix (what DNS64 hands out in IPv6-only
        // clusters): judged by the IPv4 address it reaches.
        return forbidden_v4(std::net::Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        // Local-use NAT64 prefixes (64:ff9b:1::/48) embed the address in
        // ways a client cannot know.
        return Some("NAT64 (local use)");
    }
    if s[0] == 0x2002 {
        // 6to4: the next 32 bits are an IPv4 address the relay reaches.
        let v4 =
            std::net::Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return forbidden_v4(v4);
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some("documentation");
    }
    if s[0] == 0x2001 && s[1] < 0x0200 {
        // 2001::/23 (Teredo, ORCHID, benchmarking, …): not plain hosts.
        return Some("IETF special-purpose");
    }
    if s[0] & 0xe000 != 0x2000 {
        return Some("reserved");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        for (ip, bad) in [
            ("127.0.0.1", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("0.0.0.0", true),
            ("::1", true),
            ("fe80::1", true),
            ("fd00::1", true),
            ("::ffff:127.0.0.1", true),
            ("::7f00:1", true),
            ("::a00:1", true),
            ("::808:808", true),
            ("fec0::1", true),
            ("2002:a00:1::1", true),
            ("2002:7f00:1::", true),
            ("2002:808:808::1", false),
            ("198.18.0.1", true),
            ("198.19.255.255", true),
            ("198.20.0.1", false),
            ("192.0.0.8", true),
            ("192.0.2.1", true),
            ("203.0.113.9", true),
            ("192.88.99.1", true),
            ("2001:db8::1", true),
            ("2001::1", true),
            ("64:ff9b::a00:1", true),
            ("64:ff9b::808:808", false),
            ("64:ff9b:1::808:808", true),
            ("100::1", true),
            ("4000::1", true),
            ("2001:4860:4860::8888", false),
            ("8.8.8.8", false),
            ("2606:4700::1111", false),
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(forbidden_kind(ip).is_some(), bad, "{ip}");
        }
    }

    #[test]
    fn descriptions_hide_queries_and_data() {
        assert_eq!(describe("https://a/b.png?sig=SECRET"), "https://a/b.png?…");
        assert_eq!(
            describe("data:image/png;base64,AAAA"),
            "data:image/png;base64,…"
        );
    }

    fn fetcher(dir: &Path, disk_bytes: u64) -> Fetcher {
        let store = crate::store::local::LocalStore::open(dir).expect("store");
        Fetcher {
            rules: InputRules {
                allowed_dirs: Vec::new(),
                enforce_dirs: false,
                output_folder_by_path: true,
                allow_hosts: Vec::new(),
                max_input_bytes: 1 << 20,
                max_total_bytes: 2 << 20,
                temp_dir: dir.to_path_buf(),
                download_timeout: Duration::from_secs(5),
                max_redirects: 0,
            },
            store: Arc::new(Store::Local(store)),
            disk: Budget::new(crate::memory::BudgetConfig {
                total_bytes: disk_bytes,
                max_queue: 0,
                queue_timeout: Duration::ZERO,
            }),
            preparing: Arc::new(tokio::sync::Semaphore::new(PREPARE_AT_ONCE)),
        }
    }

    #[tokio::test]
    async fn ip_literals_are_their_own_address() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = fetcher(dir.path(), 1 << 20);
        for (url, want) in [
            (
                "https://[2001:4860:4860::8888]/a.png",
                "[2001:4860:4860::8888]:443",
            ),
            (
                "https://[2606:4700::1111]:8443/a.png",
                "[2606:4700::1111]:8443",
            ),
            ("https://8.8.8.8/a.png", "8.8.8.8:443"),
        ] {
            let u = url::Url::parse(url).expect("url");
            let got = f.vet(&u, "x", false).await.expect(url);
            assert_eq!(got.to_string(), want);
        }
        let u = url::Url::parse("https://[fd00::1]/a.png").expect("url");
        assert!(matches!(
            f.vet(&u, "x", false).await,
            Err(InputError::Blocked {
                kind: "private (unique local)",
                ..
            })
        ));
    }

    fn png_data_uri(len: usize) -> String {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.resize(len, 7);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
        format!("data:image/png;base64,{b64}")
    }

    fn temp_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
            })
            .count()
    }

    #[tokio::test]
    async fn temp_disk_is_paid_before_writing_and_given_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = fetcher(dir.path(), 300 << 10);
        let uri = png_data_uri(200 << 10);
        let first = f
            .prepare_all(std::slice::from_ref(&uri), "gemini-2.5-flash-image")
            .await;
        let first = first.expect("fits the disk budget");
        assert!(f.disk.stats().reserved_bytes >= 200 << 10);
        // A second one does not fit while the first is held: refused
        // before anything is written.
        let err = f
            .prepare_all(std::slice::from_ref(&uri), "gemini-2.5-flash-image")
            .await
            .expect_err("over the disk budget");
        assert!(matches!(err, InputError::DiskBusy { .. }), "{err}");
        assert!(err.to_string().contains("--max-temp-bytes"), "{err}");
        assert_eq!(temp_files(dir.path()), 1, "only the first one's file");
        drop(first);
        assert_eq!(f.disk.stats().reserved_bytes, 0);
        assert_eq!(temp_files(dir.path()), 0);
        let again = f.prepare_all(&[uri], "gemini-2.5-flash-image").await;
        assert!(again.is_ok(), "room again once the first is gone");
    }

    #[test]
    fn stale_temp_files_are_removed_at_start() {
        let dir = tempfile::tempdir().expect("tmp");
        let old = dir.path().join(format!("{TEMP_PREFIX}0000000000000001"));
        let young = dir.path().join(format!("{TEMP_PREFIX}0000000000000002"));
        let other = dir.path().join("someone-else.png");
        for p in [&old, &young, &other] {
            std::fs::write(p, b"x").expect("write");
        }
        let long_ago = std::time::SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(60);
        for p in [&old, &other] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .and_then(|f| f.set_modified(long_ago))
                .expect("set mtime");
        }
        remove_stale_temp_files(dir.path());
        assert!(!old.exists(), "a crash's leftover goes");
        assert!(
            young.exists(),
            "a live call's file (maybe another server's) stays"
        );
        assert!(other.exists(), "files that are not ours stay");
    }
}
