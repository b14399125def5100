//! The access log (LeoFS had one): with `--access-log FILE`, one line per S3 or REST request a
//! node answers, in S3's server access log format, written to `FILE` and rotated by size
//! (`FILE.1` the newest of the kept files).
//!
//! Cores never wait for it: a core formats its line when the answer's body has been sent (or
//! the client went away) and hands it to the node's writer thread through a bounded queue
//! ([`QUEUE_LINES_MAX`]); when the queue is full the line is dropped and counted, and the
//! writer logs how many were dropped. The writer flushes to the file whenever the queue is
//! empty, so a line reaches the OS within a moment of its request; lines are not fsynced (a
//! crash of the machine may lose the last second of them).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use leofs_manager::adm::civil_from_days;

/// Lines waiting for the writer; beyond, a line is dropped (and counted).
pub const QUEUE_LINES_MAX: usize = 65_536;
/// Bytes of lines waiting for the writer; beyond, a line is dropped (and counted).
pub const QUEUE_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// Most rotated files kept.
pub const FILES_KEPT_MAX: u32 = 1000;
/// Default size at which the log file is rotated (bytes).
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default number of rotated files kept beside the current one.
pub const DEFAULT_FILES_KEPT: u32 = 5;
/// Longest a written line waits in the writer's buffer before it is flushed to the file.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Where the access log goes and how it rotates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// The current log file.
    pub path: PathBuf,
    /// Size at which the file is rotated (bytes, at least one line).
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` … `path.N`); 0 keeps none (the file starts over).
    pub files_kept: u32,
}

/// A node's access log: cheap to clone, shared by every core.
#[derive(Clone)]
pub struct AccessLog {
    tx: crossbeam::channel::Sender<Message>,
    dropped: Arc<AtomicU64>,
    /// Bytes of the lines queued, at most [`QUEUE_BYTES_MAX`].
    queued_bytes: Arc<AtomicU64>,
    /// The writer's state until its thread is started ([`AccessLog::start`]).
    unstarted: Arc<Mutex<Option<Unstarted>>>,
}

/// What the writer thread takes when it starts.
struct Unstarted {
    rx: crossbeam::channel::Receiver<Message>,
    writer: Writer,
}

/// What cores send the writer.
enum Message {
    /// One line, without its newline.
    Line(String),
    /// Flush what came before, then say so.
    Flush(std::sync::mpsc::SyncSender<()>),
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("queued", &self.tx.len())
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

/// Who signed a request, once a signature check has verified it: put in the request's
/// extensions by the access log's front and filled in by what verified it (the fast path, or
/// the access check after s3s verified the signature), so that the log never names a user
/// from an unverified key.
#[derive(Clone, Debug, Default)]
pub struct VerifiedRequester(pub Arc<std::sync::OnceLock<String>>);

impl VerifiedRequester {
    /// Records the user of `access_key` (if a request carries the slot).
    pub fn record(
        extensions: &http::Extensions,
        state: &leofs_manager::ManagerState,
        access_key: &str,
    ) {
        if let Some(slot) = extensions.get::<Self>()
            && let Some(user) = crate::auth::caller_user(state, Some(access_key))
        {
            let _ = slot.0.set(user);
        }
    }
}

/// The S3 error code of an answer, put in its extensions by the S3 front where it is known
/// (error documents), for the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorCode(pub String);

impl AccessLog {
    /// Opens (appends to) the log file; lines are queued from now on and written once a core
    /// starts the writer thread ([`AccessLog::start`]).
    pub fn open(config: AccessLogConfig) -> std::io::Result<Self> {
        let file = open_append(&config.path)?;
        let size = file.metadata()?.len();
        let (tx, rx) = crossbeam::channel::bounded(QUEUE_LINES_MAX);
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            config,
            out: BufWriter::new(file),
            size,
            queued_bytes: Arc::clone(&queued_bytes),
            failing: false,
        };
        Ok(Self {
            tx,
            dropped: Arc::default(),
            queued_bytes,
            unstarted: Arc::new(Mutex::new(Some(Unstarted { rx, writer }))),
        })
    }

    /// Starts the writer thread unless it runs. Called from a core thread: the writer inherits
    /// its blocked shutdown signals (the node's watcher takes them) and leaves its CPU.
    pub fn start(&self) -> std::io::Result<()> {
        let mut unstarted = self
            .unstarted
            .lock()
            .map_err(|_| std::io::Error::other("the access log's start panicked"))?;
        if let Some(Unstarted { rx, mut writer }) = unstarted.take() {
            let dropped = Arc::clone(&self.dropped);
            std::thread::Builder::new()
                .name("leofs-access-log".into())
                .spawn(move || {
                    crate::disk_cache::leave_the_core_cpu();
                    writer.run(&rx, &dropped);
                })?;
        }
        Ok(())
    }

    /// Queues one line (without its newline); dropped and counted when the queue is full.
    pub fn record(&self, line: String) {
        let len = line.len() as u64;
        if self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES_MAX {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.tx.try_send(Message::Line(line)).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits (at most `timeout`) until the lines queued so far are in the file: called once the
    /// node has stopped serving, so that the last requests' lines are not lost.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.tx.send_timeout(Message::Flush(done), timeout).is_ok()
            && wait
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_ok()
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer thread's state.
struct Writer {
    config: AccessLogConfig,
    out: BufWriter<File>,
    /// Bytes in the current file.
    size: u64,
    /// Bytes of the lines queued (decreased as they are written).
    queued_bytes: Arc<AtomicU64>,
    /// Whether the last write failed (warned once until one succeeds).
    failing: bool,
}

impl Writer {
    fn run(&mut self, rx: &crossbeam::channel::Receiver<Message>, dropped: &AtomicU64) {
        let mut reported = 0;
        loop {
            let written = match rx.recv_timeout(FLUSH_INTERVAL) {
                Ok(Message::Line(line)) => {
                    self.queued_bytes
                        .fetch_sub(line.len() as u64, Ordering::Relaxed);
                    self.write_line(&line)
                }
                Ok(Message::Flush(done)) => {
                    let flushed = self.out.flush();
                    let _ = done.send(());
                    flushed
                }
                Err(crossbeam::channel::RecvTimeoutError::Timeout) => Ok(()),
                Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
            };
            let flushed = if rx.is_empty() {
                self.out.flush()
            } else {
                Ok(())
            };
            match written.and(flushed) {
                Err(e) if !self.failing => {
                    self.failing = true;
                    tracing::warn!(path = %self.config.path.display(), error = %e, "cannot write the access log (warned once until it can again)");
                }
                Err(_) => {}
                Ok(()) => self.failing = false,
            }
            let now = dropped.load(Ordering::Relaxed);
            if now > reported {
                tracing::warn!(
                    lines = now - reported,
                    "access log lines dropped: the writer fell behind the requests"
                );
                reported = now;
            }
        }
        let _ = self.out.flush();
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0
            && self.size + len > self.config.max_bytes
            && let Err(e) = self.rotate()
        {
            // The line is still written; rotation is tried again once another
            // `max_bytes` have been written (the size counts from here).
            self.size = 0;
            tracing::warn!(path = %self.config.path.display(), error = %e, "cannot rotate the access log");
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    /// Moves `path` to `path.1` (and each `path.i` to `path.i+1`, dropping the oldest), then
    /// starts a new `path`.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let path = &self.config.path;
        let numbered = |i: u32| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{i}"));
            PathBuf::from(name)
        };
        let kept = self.config.files_kept;
        // A file moved or removed by someone else is not an error: the log starts over.
        let gone_is_fine = |result: std::io::Result<()>| match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        let moved = if kept == 0 {
            gone_is_fine(std::fs::remove_file(path))
        } else {
            let _ = std::fs::remove_file(numbered(kept));
            (1..kept)
                .rev()
                .try_for_each(|i| gone_is_fine(std::fs::rename(numbered(i), numbered(i + 1))))
                .and_then(|()| gone_is_fine(std::fs::rename(path, numbered(1))))
        };
        // The current file is reopened (and counted from zero) whatever happened above, so a
        // failure never makes every later line rotate again.
        self.size = 0;
        self.out = BufWriter::new(open_append(path)?);
        self.size = self.out.get_ref().metadata().map_or(0, |m| m.len());
        moved
    }
}

/// What the access log says about one request, gathered as it is answered.
#[derive(Debug)]
pub struct Entry {
    /// The bucket's owner (user id), if the bucket exists.
    pub bucket_owner: Option<String>,
    /// The bucket named, if any.
    pub bucket: Option<String>,
    /// When the request arrived.
    pub received: SystemTime,
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// The user whose key signed the request (None: anonymous).
    pub requester: Option<String>,
    /// `x-amz-request-id` of the answer.
    pub request_id: Option<String>,
    /// S3's operation name (`REST.GET.OBJECT`, …).
    pub operation: String,
    /// The object key, if any (written URL-encoded).
    pub key: Option<String>,
    /// `METHOD /path?query HTTP/1.1`.
    pub request_uri: String,
    /// The answer's status.
    pub status: u16,
    /// The S3 error code of an error answer, where known.
    pub error_code: Option<String>,
    /// Body bytes sent.
    pub bytes_sent: u64,
    /// The object's whole size, for object reads and writes.
    pub object_size: Option<u64>,
    /// From arrival to the last byte of the answer.
    pub total: Duration,
    /// From arrival to the answer's head.
    pub turn_around: Duration,
    /// `Referer`.
    pub referer: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `x-amz-version-id` of the answer.
    pub version_id: Option<String>,
    /// `x-amz-id-2` of the answer.
    pub host_id: Option<String>,
    /// `SigV4`, `SigV2` or none (anonymous).
    pub signature_version: Option<&'static str>,
    /// `AuthHeader`, `QueryString` or none.
    pub authentication_type: Option<&'static str>,
    /// `Host`.
    pub host: Option<String>,
}

/// Longest value one field of a line keeps (bytes; longer ones are cut, so that a line stays
/// a few KiB whatever a client sends).
const FIELD_BYTES_MAX: usize = 2048;

/// A field: `-` when missing; a space, `"`, `%`, a control character or a non-ASCII byte is
/// written `%XX`, so that no client-given value can end a field or a line.
fn field(out: &mut String, value: Option<&str>) {
    out.push(' ');
    match value.filter(|v| !v.is_empty()) {
        Some(v) => {
            for &b in v.as_bytes().iter().take(FIELD_BYTES_MAX) {
                if b.is_ascii_graphic() && b != b'"' && b != b'%' {
                    out.push(char::from(b));
                } else {
                    let _ = write!(out, "%{b:02X}");
                }
            }
        }
        None => out.push('-'),
    }
}

/// A quoted field: `"value"` with `"` and `\\` escaped and control characters written `?`,
/// `"-"` when missing.
fn quoted(out: &mut String, value: Option<&str>) {
    out.push_str(" \"");
    match value {
        Some(v) if !v.is_empty() => {
            for c in v[..v.floor_char_boundary(FIELD_BYTES_MAX)].chars() {
                match c {
                    '"' | '\\' => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if c.is_control() => out.push('?'),
                    c => out.push(c),
                }
            }
        }
        _ => out.push('-'),
    }
    out.push('"');
}

impl Entry {
    /// The entry as one line of S3's server access log format.
    pub fn line(&self) -> String {
        let mut out = String::with_capacity(320);
        out.push_str(self.bucket_owner.as_deref().unwrap_or("-"));
        field(&mut out, self.bucket.as_deref());
        out.push(' ');
        out.push_str(&log_time(self.received));
        field(&mut out, self.remote.map(|r| r.ip().to_string()).as_deref());
        field(&mut out, self.requester.as_deref());
        field(&mut out, self.request_id.as_deref());
        field(&mut out, Some(&self.operation));
        // URL-encoded: nothing in it needs escaping again.
        out.push(' ');
        match self.key.as_deref().filter(|k| !k.is_empty()) {
            Some(k) => out.push_str(&url_encode(&k[..k.floor_char_boundary(FIELD_BYTES_MAX)])),
            None => out.push('-'),
        }
        quoted(&mut out, Some(&self.request_uri));
        let _ = write!(out, " {}", self.status);
        field(&mut out, self.error_code.as_deref());
        let count = |n: u64| (n > 0).then(|| n.to_string());
        field(&mut out, count(self.bytes_sent).as_deref());
        field(&mut out, self.object_size.map(|n| n.to_string()).as_deref());
        let _ = write!(
            out,
            " {} {}",
            self.total.as_millis(),
            self.turn_around.as_millis()
        );
        quoted(&mut out, self.referer.as_deref());
        quoted(&mut out, self.user_agent.as_deref());
        field(&mut out, self.version_id.as_deref());
        field(&mut out, self.host_id.as_deref());
        field(&mut out, self.signature_version);
        field(&mut out, None); // cipher suite: no TLS
        field(&mut out, self.authentication_type);
        field(&mut out, self.host.as_deref());
        field(&mut out, None); // TLS version
        field(&mut out, None); // access point ARN
        field(&mut out, None); // ACL required
        field(&mut out, None); // source region
        out
    }
}

/// A key as S3's log writes it: percent-encoded but for unreserved characters and `/`.
fn url_encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `[06/Feb/2019:00:00:38 +0000]`.
fn log_time(at: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "[{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000]",
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// S3's log name of an operation, from the node's name of it (`GetObject`, `RestGetObject`…,
/// see `metered`), the method and the query: `REST.<METHOD>.<RESOURCE>`.
pub fn operation_name(operation: &str, method: &http::Method, query: &str, object: bool) -> String {
    let resource = match operation {
        "GetObject" | "HeadObject" | "PutObject" | "DeleteObject" | "RestGetObject"
        | "RestHeadObject" | "RestPutObject" | "RestDeleteObject" => "OBJECT",
        "CopyObject" => return "REST.COPY.OBJECT".into(),
        "UploadPartCopy" => return "REST.COPY.PART".into(),
        "UploadPart" => "PART",
        "CreateMultipartUpload" | "ListMultipartUploads" => "UPLOADS",
        "CompleteMultipartUpload" | "AbortMultipartUpload" | "ListParts" => "UPLOAD",
        "ListObjects" | "ListObjectsV2" | "HeadBucket" | "CreateBucket" | "DeleteBucket" => {
            "BUCKET"
        }
        "ListObjectVersions" => "BUCKETVERSIONS",
        "ListBuckets" => "SERVICE",
        "DeleteObjects" => "MULTI_OBJECT_DELETE",
        "GetObjectTagging" | "PutObjectTagging" | "DeleteObjectTagging" => "OBJECT_TAGGING",
        "GetObjectAttributes" => "OBJECT_ATTRIBUTES",
        "GetBucketTagging" | "PutBucketTagging" | "DeleteBucketTagging" => "TAGGING",
        "GetBucketCors" | "PutBucketCors" | "DeleteBucketCors" => "CORS",
        "GetBucketLifecycleConfiguration"
        | "PutBucketLifecycleConfiguration"
        | "DeleteBucketLifecycle" => "LIFECYCLE",
        "GetBucketPolicy" | "PutBucketPolicy" | "DeleteBucketPolicy" => "BUCKETPOLICY",
        "GetBucketAcl" | "PutBucketAcl" | "GetObjectAcl" | "PutObjectAcl" => "ACL",
        "GetBucketLocation" => "LOCATION",
        "GetBucketVersioning" | "PutBucketVersioning" => "VERSIONING",
        _ if *method == http::Method::OPTIONS => "PREFLIGHT",
        _ => {
            // Another subresource (`?website`, `?logging`…) names what is asked for.
            let sub = query
                .split('&')
                .map(|pair| pair.split('=').next().unwrap_or(pair))
                .find(|name| {
                    !name.is_empty()
                        && name.len() <= 32
                        && name.bytes().all(|b| b.is_ascii_alphabetic())
                });
            return match (sub, object) {
                (Some(sub), true) => format!("REST.{method}.OBJECT_{}", sub.to_ascii_uppercase()),
                (Some(sub), false) => format!("REST.{method}.{}", sub.to_ascii_uppercase()),
                (None, true) => format!("REST.{method}.OBJECT"),
                (None, false) => format!("REST.{method}.BUCKET"),
            };
        }
    };
    format!("REST.{method}.{resource}")
}

/// A request's start, kept until its answer is sent.
#[derive(Debug)]
pub struct Started {
    /// When the request arrived (wall clock, for the line).
    pub received: SystemTime,
    /// When the request arrived (for durations).
    pub at: Instant,
}

impl Started {
    /// Now.
    pub fn now() -> Self {
        Self {
            received: SystemTime::now(),
            at: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            bucket_owner: Some("root".into()),
            bucket: Some("photos".into()),
            received: SystemTime::UNIX_EPOCH + Duration::from_secs(1_549_411_238),
            remote: Some("192.0.2.3:51000".parse().unwrap()),
            requester: Some("root".into()),
            request_id: Some("3E57427F3EXAMPLE".into()),
            operation: "REST.GET.OBJECT".into(),
            key: Some("dir/a b.jpg".into()),
            request_uri: "GET /photos/dir/a%20b.jpg HTTP/1.1".into(),
            status: 200,
            error_code: None,
            bytes_sent: 113,
            object_size: Some(113),
            total: Duration::from_millis(7),
            turn_around: Duration::from_millis(3),
            referer: None,
            user_agent: Some("aws-cli/2 \"quoted\"".into()),
            version_id: None,
            host_id: Some("s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6Uk=".into()),
            signature_version: Some("SigV4"),
            authentication_type: Some("AuthHeader"),
            host: Some("127.0.0.1:8080".into()),
        }
    }

    #[test]
    fn lines_have_s3s_fields_in_s3s_order() {
        assert_eq!(
            entry().line(),
            "root photos [06/Feb/2019:00:00:38 +0000] 192.0.2.3 root 3E57427F3EXAMPLE \
             REST.GET.OBJECT dir/a%20b.jpg \"GET /photos/dir/a%20b.jpg HTTP/1.1\" 200 - 113 113 \
             7 3 \"-\" \"aws-cli/2 \\\"quoted\\\"\" - s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6Uk= \
             SigV4 - AuthHeader 127.0.0.1:8080 - - - -"
        );
    }

    #[test]
    fn dates_are_civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
        assert_eq!(
            log_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_625_845)),
            "[07/Dec/2026:06:44:05 +0000]"
        );
    }

    #[test]
    fn operations_are_named_as_s3_names_them() {
        use http::Method;
        let name = |op, m: &Method, q, object| operation_name(op, m, q, object);
        assert_eq!(name("GetObject", &Method::GET, "", true), "REST.GET.OBJECT");
        assert_eq!(
            name("CopyObject", &Method::PUT, "", true),
            "REST.COPY.OBJECT"
        );
        assert_eq!(
            name("UploadPart", &Method::PUT, "partNumber=1&uploadId=x", true),
            "REST.PUT.PART"
        );
        assert_eq!(
            name("ListObjectsV2", &Method::GET, "list-type=2", false),
            "REST.GET.BUCKET"
        );
        assert_eq!(
            name("Other", &Method::PUT, "tagging", true),
            "REST.PUT.OBJECT_TAGGING"
        );
        assert_eq!(name("Other", &Method::GET, "cors", false), "REST.GET.CORS");
        assert_eq!(
            name("Other", &Method::OPTIONS, "", true),
            "REST.OPTIONS.PREFLIGHT"
        );
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut writer = Writer {
            config: AccessLogConfig {
                path: path.clone(),
                max_bytes: 30,
                files_kept: 2,
            },
            out: BufWriter::new(open_append(&path).unwrap()),
            size: 0,
            queued_bytes: Arc::default(),
            failing: false,
        };
        for i in 0..7 {
            writer.write_line(&format!("line number {i}")).unwrap();
        }
        writer.out.flush().unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "line number 6\n");
        assert_eq!(
            read(&dir.path().join("access.log.1")),
            "line number 4\nline number 5\n"
        );
        assert_eq!(
            read(&dir.path().join("access.log.2")),
            "line number 2\nline number 3\n"
        );
        assert!(!dir.path().join("access.log.3").exists());
    }
}
