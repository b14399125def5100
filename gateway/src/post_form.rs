//! Browser form uploads (POST object), where s3s differs from S3: S3 replaces `${filename}` in
//! the form's `key` field with the name of the uploaded file, and writes the ETag of its
//! `201` document and of its `success_action_redirect` quoted. The front reads a form's fields
//! (they come before the file, at most [`FORM_FIELDS_BYTES_MAX`]), puts the file's name in the
//! key, and hands s3s the same form; it quotes the ETag of the answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use s3s::Body;

use crate::fast_path::{rewrite_document, xml_element};

/// Most bytes of a form read ahead of its file (S3 allows 20 KB of fields).
pub const FORM_FIELDS_BYTES_MAX: usize = 64 * 1024;

/// The variable S3 replaces in a form's key.
const FILENAME_VARIABLE: &str = "${filename}";

/// The boundary of a `multipart/form-data` request, if it is one.
fn boundary_of<B>(req: &Request<B>) -> Option<String> {
    let content_type = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    let (kind, _) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    param(content_type, "boundary")
}

/// Whether `req` is a form upload (POST of `multipart/form-data`).
pub fn is_form_upload<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::POST && boundary_of(req).is_some()
}

/// `req` with `${filename}` in its form's `key` replaced by the uploaded file's name (the form
/// is unchanged when it has no such key, or its fields do not come within
/// [`FORM_FIELDS_BYTES_MAX`]: s3s then answers it as it is).
pub async fn with_filename(
    req: Request<Body>,
) -> Result<Request<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let Some(boundary) = boundary_of(&req) else {
        return Ok(req);
    };
    let (mut parts, mut body) = req.into_parts();
    let mut head = BytesMut::new();
    let mut ended = false;
    // Each frame's bytes are searched once for the end of a part's headers; the form is parsed
    // only when one has come.
    let mut searched: usize = 0;
    let file_part = loop {
        let from = searched.saturating_sub(HEADERS_END.len() - 1);
        searched = head.len();
        if find(&head, HEADERS_END, from).is_some()
            && let Some(found) = file_part_header(&head, &boundary)
        {
            break Some(found);
        }
        if head.len() >= FORM_FIELDS_BYTES_MAX {
            break None;
        }
        match body.frame().await {
            Some(frame) => {
                if let Ok(data) = frame?.into_data() {
                    head.extend_from_slice(&data);
                }
            }
            None => {
                ended = true;
                break None;
            }
        }
    };
    let mut head = head.freeze();
    if let Some((filename, content_start)) = file_part
        && let Some(rewritten) = substitute_key(&head, content_start, &boundary, &filename)
    {
        let grown = rewritten.len() as i64 - head.len() as i64;
        if let Some(length) = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
        {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length + grown));
        }
        head = rewritten;
    }
    let body = Prefixed {
        prefix: (!head.is_empty()).then_some(head),
        rest: (!ended).then_some(body),
    };
    Ok(Request::from_parts(parts, Body::http_body_unsync(body)))
}

/// The end of a part's headers.
const HEADERS_END: &[u8] = b"\r\n\r\n";

/// Where `needle` first is in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| at + from)
}

/// The parts of a form's read-ahead, each as its headers (text) and where its content starts.
fn part_headers<'a>(head: &'a [u8], boundary: &str) -> impl Iterator<Item = (&'a str, usize)> {
    let delimiter = format!("--{boundary}");
    let mut at = 0;
    std::iter::from_fn(move || {
        let start = find(head, delimiter.as_bytes(), at)? + delimiter.len();
        let end = find(head, HEADERS_END, start)?;
        at = end + HEADERS_END.len();
        Some((std::str::from_utf8(&head[start..end]).unwrap_or(""), at))
    })
}

/// A part's form field name (its Content-Disposition's `name`) and `filename`.
fn disposition(headers: &str) -> Option<(String, Option<String>)> {
    let line = headers.split("\r\n").find(|l| {
        l.split_once(':')
            .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("content-disposition"))
    })?;
    Some((param(line, "name")?, param(line, "filename")))
}

/// The file part's name (the last segment of its `filename`, as S3 takes it) and where its
/// content starts, once its headers are in `head`.
fn file_part_header(head: &[u8], boundary: &str) -> Option<(String, usize)> {
    part_headers(head, boundary).find_map(|(headers, content_start)| {
        let (name, filename) = disposition(headers)?;
        if !name.eq_ignore_ascii_case("file") {
            return None;
        }
        let filename = filename?;
        let base = filename.rsplit(['/', '\\']).next().unwrap_or_default();
        Some((base.to_owned(), content_start))
    })
}

/// A redirect location with its `etag` parameter (the last one, which s3s appends) quoted.
fn quote_redirect_etag(location: &str) -> Option<String> {
    let (url, fragment) = match location.split_once('#') {
        Some((url, fragment)) => (url, Some(fragment)),
        None => (location, None),
    };
    let at = url.rfind("&etag=").or_else(|| url.rfind("?etag="))? + "&etag=".len();
    let (value, rest) = url[at..]
        .split_once('&')
        .map_or((&url[at..], ""), |(v, r)| (v, r));
    if value.starts_with("%22") {
        return None;
    }
    let mut out = format!("{}%22{value}%22", &url[..at]);
    if !rest.is_empty() {
        out.push('&');
        out.push_str(rest);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Some(out)
}

/// A `name="value"` parameter of a header value (Content-Disposition, Content-Type).
fn param(line: &str, name: &str) -> Option<String> {
    line.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// `head` with `${filename}` in the `key` field's value replaced by `filename`; only the
/// fields before the file's content (`content_start`) are read or changed. None when the key
/// has no such variable.
fn substitute_key(
    head: &[u8],
    content_start: usize,
    boundary: &str,
    filename: &str,
) -> Option<Bytes> {
    let fields = &head[..content_start];
    let delimiter = format!("\r\n--{boundary}");
    let (value_start, value_end) =
        part_headers(fields, boundary).find_map(|(headers, start)| {
            let (name, _) = disposition(headers)?;
            if !name.eq_ignore_ascii_case("key") {
                return None;
            }
            Some((start, find(fields, delimiter.as_bytes(), start)?))
        })?;
    let value = std::str::from_utf8(&fields[value_start..value_end]).ok()?;
    if !value.contains(FILENAME_VARIABLE) {
        return None;
    }
    let value = value.replace(FILENAME_VARIABLE, filename);
    let mut out = BytesMut::with_capacity(head.len() + filename.len());
    out.extend_from_slice(&head[..value_start]);
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(&head[value_end..]);
    Some(out.freeze())
}

/// A body whose first bytes were read ahead.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Option<Body>,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx).map_err(Into::into),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self
            .rest
            .as_ref()
            .map_or(SizeHint::with_exact(0), |r| r.size_hint());
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + prefix);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

/// A form upload's answer as S3 gives it: a policy condition that fails is `403 AccessDenied`
/// (s3s answers `400 InvalidPolicyDocument`, which S3 keeps for a policy it cannot read), and
/// the ETag is quoted.
pub fn answer_as_s3(resp: &mut Response<Body>) {
    if let Some(condition) = failed_condition(resp) {
        *resp = crate::fast_path::error_response(s3s::S3Error::with_message(
            s3s::S3ErrorCode::AccessDenied,
            format!("Invalid according to Policy: {condition}"),
        ));
        return;
    }
    quote_etag(resp);
}

/// The message of s3s's answer to a policy condition that failed.
fn failed_condition(resp: &Response<Body>) -> Option<String> {
    if resp.status() != http::StatusCode::BAD_REQUEST {
        return None;
    }
    let document = resp.body().bytes()?;
    let text = std::str::from_utf8(&document).ok()?;
    if xml_element(text, "Code")? != "InvalidPolicyDocument" {
        return None;
    }
    let message = xml_element(text, "Message")?
        .replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    (message.starts_with("Policy condition") || message.starts_with("Bucket in form field"))
        .then_some(message)
}

/// Writes the ETag of a form upload's answer quoted, as S3 does: in the `201` document and in
/// the `etag` parameter of a `success_action_redirect` location.
fn quote_etag(resp: &mut Response<Body>) {
    if resp.status() == http::StatusCode::SEE_OTHER {
        let Some(location) = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
        else {
            return;
        };
        let quoted = quote_redirect_etag(location);
        if let Some(value) = quoted.and_then(|q| HeaderValue::from_str(&q).ok()) {
            resp.headers_mut().insert(header::LOCATION, value);
        }
        return;
    }
    if resp.status() != http::StatusCode::CREATED {
        return;
    }
    rewrite_document(resp, |text| {
        (!text.contains("<ETag>\"")).then(|| {
            text.replacen("<ETag>", "<ETag>\"", 1)
                .replacen("</ETag>", "\"</ETag>", 1)
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &str = "--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nuploads/${filename}\r\n\
        --XyZ\r\nContent-Disposition: form-data; name=\"policy\"\r\n\r\neyJ9\r\n\
        --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cat photo.jpg\"\r\n\
        Content-Type: image/jpeg\r\n\r\nJPEGDATA\r\n--XyZ--\r\n";

    #[test]
    fn the_file_name_goes_into_the_key() {
        let (filename, content) = file_part_header(FORM.as_bytes(), "XyZ").unwrap();
        assert_eq!(filename, "cat photo.jpg");
        assert!(FORM[content..].starts_with("JPEGDATA"));
        let rewritten = substitute_key(FORM.as_bytes(), content, "XyZ", &filename).unwrap();
        assert_eq!(
            std::str::from_utf8(&rewritten).unwrap(),
            FORM.replace("uploads/${filename}", "uploads/cat photo.jpg")
        );
        let plain = FORM.replace("${filename}", "fixed");
        assert_eq!(
            substitute_key(plain.as_bytes(), content, "XyZ", &filename),
            None
        );
    }

    #[test]
    fn binary_files_case_and_paths_in_file_names() {
        // The file's bytes are not text, field names in any case, a path in the file name.
        let mut form = FORM
            .replace("name=\"key\"", "name=\"Key\"")
            .replace(
                "name=\"file\"; filename=\"cat photo.jpg\"",
                "name=\"File\"; filename=\"C:\\pics/../cat.jpg\"",
            )
            .into_bytes();
        let at = form.windows(8).position(|w| w == b"JPEGDATA").unwrap();
        form.splice(at..at + 8, [0xff, 0xd8, 0xff, 0xe0, 0x00, 0x80, 0xfe, 0xc3]);
        let (filename, content) = file_part_header(&form, "XyZ").unwrap();
        assert_eq!(filename, "cat.jpg");
        let rewritten = substitute_key(&form, content, "XyZ", &filename).unwrap();
        assert!(rewritten.windows(12).any(|w| w == b"uploads/cat."));
        assert!(rewritten.ends_with(&form[at..]));
    }

    #[test]
    fn redirect_etags_are_quoted_where_s3s_put_them() {
        assert_eq!(
            quote_redirect_etag("http://e.com/done?retag=1&bucket=b&key=k&etag=abc").as_deref(),
            Some("http://e.com/done?retag=1&bucket=b&key=k&etag=%22abc%22")
        );
        assert_eq!(
            quote_redirect_etag("http://e.com/?etag=x&bucket=b&key=k&etag=abc#top").as_deref(),
            Some("http://e.com/?etag=x&bucket=b&key=k&etag=%22abc%22#top")
        );
        assert_eq!(quote_redirect_etag("http://e.com/?etag=%22abc%22"), None);
    }

    #[test]
    fn a_form_whose_file_headers_are_not_in_yet_is_not_rewritten() {
        let cut = &FORM[..FORM.find("Content-Type: image").unwrap()];
        assert_eq!(file_part_header(cut.as_bytes(), "XyZ"), None);
    }
}
