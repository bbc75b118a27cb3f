//! A small, bounded reader of `multipart/form-data` bodies (RFC 7578), for
//! the upload endpoints (images/edits, audio/transcriptions and
//! translations) that route on their `model` part.
//!
//! The body is already held whole (up to `max_body_bytes`) for replay on
//! failover; this finds the parts in that buffer and returns byte ranges
//! into it, never a copy: a file part is skipped by a substring search for
//! the next delimiter. What it allocates is bounded by [`MAX_PARTS`] and
//! the part headers it reads by [`MAX_HEAD`], whatever the body's size.

use memchr::memmem;

/// More parts than any OpenAI upload endpoint takes (gpt-image-1 edits
/// take up to 16 images plus a dozen fields).
pub const MAX_PARTS: usize = 64;
/// The most bytes of headers one part may have.
pub const MAX_HEAD: usize = 8 * 1024;

/// One part: its form field name, its file name for a file part, and the
/// byte range of its content in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    pub name: &'a str,
    pub filename: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub span: (usize, usize),
}

impl Part<'_> {
    pub fn content<'b>(&self, body: &'b [u8]) -> &'b [u8] {
        &body[self.span.0..self.span.1]
    }
}

/// The boundary of a `multipart/form-data` content type, `None` for any
/// other content type.
pub fn boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = param(p)?;
        // RFC 2046: 1 to 70 characters.
        (k.eq_ignore_ascii_case("boundary") && !v.is_empty() && v.len() <= 70).then_some(v)
    })
}

/// `k=v` of a header parameter, trimmed, `v` without its quotes.
fn param(p: &str) -> Option<(&str, &str)> {
    let (k, v) = p.split_once('=')?;
    let v = v.trim();
    let unquoted = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
    Some((k.trim(), unquoted.unwrap_or(v)))
}

/// The parts of `body`. The error text is safe to show to the client (it
/// holds no body content).
pub fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let mut delimiter = Vec::with_capacity(boundary.len() + 4);
    delimiter.extend_from_slice(b"\r\n--");
    delimiter.extend_from_slice(boundary.as_bytes());
    let next = memmem::Finder::new(&delimiter);
    // The first delimiter may open the body without the CRLF before it;
    // anything before it is a preamble, which RFC 2046 says to ignore.
    let mut at = if body.starts_with(&delimiter[2..]) {
        delimiter.len() - 2
    } else {
        next.find(body)
            .ok_or("the multipart body has no part with its boundary")?
            + delimiter.len()
    };
    let mut out = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(out);
        }
        // Transport padding (spaces, tabs) may follow a delimiter.
        let pad = rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t'))
            .count();
        if !rest[pad..].starts_with(b"\r\n") {
            return Err("the multipart body is malformed after a boundary".into());
        }
        let head_start = at + pad + 2;
        let window = &body[head_start..body.len().min(head_start + MAX_HEAD)];
        let head_len = memmem::find(window, b"\r\n\r\n")
            .ok_or("a multipart part has no end of its headers (or headers over 8 KiB)")?;
        let head = std::str::from_utf8(&window[..head_len])
            .map_err(|_| "a multipart part's headers are not UTF-8".to_string())?;
        let content_start = head_start + head_len + 4;
        let end = next
            .find(&body[content_start..])
            .ok_or("the multipart body ends without its closing boundary")?
            + content_start;
        if out.len() == MAX_PARTS {
            return Err(format!(
                "the multipart body has more than {MAX_PARTS} parts"
            ));
        }
        out.push(part(head, (content_start, end))?);
        at = end + delimiter.len();
    }
}

/// A part from its headers.
fn part(head: &str, span: (usize, usize)) -> Result<Part<'_>, String> {
    let mut disposition = None;
    let mut content_type = None;
    for line in head.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-disposition") {
            disposition = Some(value.trim());
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim());
        }
    }
    let disposition = disposition.ok_or("a multipart part has no Content-Disposition header")?;
    let mut params = disposition.split(';');
    if !params
        .next()
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("form-data"))
    {
        return Err("a multipart part is not form-data".into());
    }
    let mut name = None;
    let mut filename = None;
    for (k, v) in params.filter_map(param) {
        if k.eq_ignore_ascii_case("name") {
            name = Some(v);
        } else if k.eq_ignore_ascii_case("filename") {
            filename = Some(v);
        }
    }
    Ok(Part {
        name: name.ok_or("a multipart part has no name")?,
        filename,
        content_type,
        span,
    })
}

/// The text of the field `name`: the first part of that name without a
/// file name, if it is UTF-8.
pub fn field<'a>(parts: &[Part<'_>], body: &'a [u8], name: &str) -> Option<&'a str> {
    let part = parts
        .iter()
        .find(|p| p.name == name && p.filename.is_none())?;
    std::str::from_utf8(part.content(body)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "----tollgate7MA4YWxk";

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, file, content) in parts {
            out.extend_from_slice(format!("--{B}\r\n").as_bytes());
            match file {
                Some(f) => out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                         Content-Type: image/png\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            out.extend_from_slice(content);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{B}--\r\n").as_bytes());
        out
    }

    #[test]
    fn finds_the_boundary_of_form_data_only() {
        assert_eq!(boundary("multipart/form-data; boundary=abc"), Some("abc"));
        assert_eq!(
            boundary("Multipart/Form-Data;charset=utf-8; Boundary=\"a b\""),
            Some("a b")
        );
        assert_eq!(boundary("multipart/mixed; boundary=abc"), None);
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("multipart/form-data; boundary="), None);
        assert_eq!(
            boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))),
            None
        );
    }

    #[test]
    fn reads_fields_and_skips_files_in_place() {
        // A file holding CRLF, dashes and a near-boundary must not end early.
        let file: &[u8] = b"\x89PNG\r\n--\r\n--tollgate7MA4YWx\r\n\x00\xff";
        let body = form(&[
            ("image", Some("a.png"), file),
            ("model", None, b"gpt-image-1"),
            ("prompt", None, b"a \"cat\"\r\non two lines"),
            ("n", None, b"2"),
        ]);
        let parts = parts(&body, B).unwrap();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0].name, "image");
        assert_eq!(parts[0].filename, Some("a.png"));
        assert_eq!(parts[0].content_type, Some("image/png"));
        assert_eq!(parts[0].content(&body), file);
        assert_eq!(field(&parts, &body, "model"), Some("gpt-image-1"));
        assert_eq!(
            field(&parts, &body, "prompt"),
            Some("a \"cat\"\r\non two lines")
        );
        assert_eq!(field(&parts, &body, "n"), Some("2"));
        // A file part is not a field.
        assert_eq!(field(&parts, &body, "image"), None);
        assert_eq!(field(&parts, &body, "size"), None);
        let (start, end) = parts[1].span;
        assert_eq!(&body[start..end], b"gpt-image-1");
    }

    #[test]
    fn a_preamble_and_padding_are_ignored() {
        let mut body = b"preamble text\r\n".to_vec();
        body.extend_from_slice(&form(&[("model", None, b"whisper-1")]));
        let padded = String::from_utf8(body).unwrap().replacen(
            &format!("--{B}\r\n"),
            &format!("--{B}  \r\n"),
            1,
        );
        let parts = parts(padded.as_bytes(), B).unwrap();
        assert_eq!(field(&parts, padded.as_bytes(), "model"), Some("whisper-1"));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let good = form(&[("model", None, b"m")]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"no boundary here".to_vec(), "no part with its boundary"),
            (
                good[..good.len() - 8].to_vec(),
                "without its closing boundary",
            ),
            (
                format!("--{B}\r\nContent-Disposition: form-data; name=\"m\"\r\nx").into_bytes(),
                "no end of its headers",
            ),
            (
                format!("--{B}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{B}--").into_bytes(),
                "no Content-Disposition",
            ),
            (
                format!("--{B}\r\nContent-Disposition: attachment; name=\"m\"\r\n\r\nx\r\n--{B}--")
                    .into_bytes(),
                "not form-data",
            ),
            (
                format!("--{B}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{B}--").into_bytes(),
                "has no name",
            ),
            (
                format!("--{B}garbage").into_bytes(),
                "malformed after a boundary",
            ),
            (
                format!(
                    "--{B}\r\nContent-Disposition: form-data; name=\"m\"\r\n{}\r\n\r\nx\r\n--{B}--",
                    "X-Pad: ".to_string() + &"p".repeat(MAX_HEAD)
                )
                .into_bytes(),
                "over 8 KiB",
            ),
        ];
        for (body, want) in cases {
            let e = parts(&body, B).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
        let many: Vec<(&str, Option<&str>, &[u8])> =
            (0..=MAX_PARTS).map(|_| ("f", None, &b"v"[..])).collect();
        let e = parts(&form(&many), B).unwrap_err();
        assert!(e.contains("more than 64 parts"), "{e}");
    }
}
