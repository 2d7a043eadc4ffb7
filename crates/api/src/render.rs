//! Responses: one typed struct per action, serialized to JSON (default) or to XML
//! (`Format=XML`) from the same value. Lists are `Vec` fields: JSON arrays, repeated
//! elements in XML (`<Invocation>…</Invocation><Invocation>…`), as the seeds show.

use crate::error::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Json,
    Xml,
}

impl Format {
    /// `Format=XML` (any case) asks for XML; anything else is JSON.
    pub fn from_param(v: Option<&str>) -> Format {
        match v {
            Some(f) if f.eq_ignore_ascii_case("xml") => Format::Xml,
            _ => Format::Json,
        }
    }

    /// The format a raw query string asks for (before, or without, parsing the rest
    /// of the request: for errors about the request itself).
    pub fn from_raw_query(raw_query: &str) -> Format {
        let format = form_urlencoded::parse(raw_query.as_bytes())
            .find(|(k, _)| k == "Format")
            .map(|(_, v)| v.into_owned());
        Format::from_param(format.as_deref())
    }
}

/// The wire form of an error.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody<'a> {
    request_id: &'a str,
    host_id: &'a str,
    code: String,
    message: String,
}

fn body_response(status: u16, format: Format, body: Result<String, String>) -> Response {
    match body {
        Ok(text) => {
            let ctype = match format {
                Format::Json => "application/json;charset=utf-8",
                Format::Xml => "text/xml;charset=utf-8",
            };
            let mut resp = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                text,
            )
                .into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            resp
        }
        Err(e) => {
            tracing::error!("could not serialize a response: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

fn serialize<T: Serialize>(root: &str, value: &T, format: Format) -> Result<String, String> {
    match format {
        Format::Json => serde_json::to_string(value).map_err(|e| e.to_string()),
        Format::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
            let mut ser = quick_xml::se::Serializer::with_root(&mut out, Some(root))
                .map_err(|e| e.to_string())?;
            ser.expand_empty_elements(true);
            value.serialize(ser).map_err(|e| e.to_string())?;
            Ok(xml_safe(out))
        }
    }
}

/// Whether XML 1.0 cannot carry `c` at all, not even as a character reference: the
/// C0 controls but tab, line feed and carriage return, and U+FFFE / U+FFFF.
pub fn forbidden_in_xml(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
}

/// The document with every character XML 1.0 forbids replaced by U+FFFD, so that
/// every answer parses whatever a field holds (a name stored before such names were
/// refused, a host's error text, plain-text output with NUL bytes), and every carriage
/// return written `&#13;`, which a parser reads back as one where it reads a literal
/// CR (or CR LF) as a line feed. Element names are ours, so only text can hold either.
fn xml_safe(doc: String) -> String {
    if !doc.chars().any(|c| c == '\r' || forbidden_in_xml(c)) {
        return doc;
    }
    let mut out = String::with_capacity(doc.len() + 16);
    for c in doc.chars() {
        match c {
            '\r' => out.push_str("&#13;"),
            c if forbidden_in_xml(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A successful answer: `root` is the XML root element (`<Action>Response`).
pub fn ok<T: Serialize>(action: &str, value: &T, format: Format) -> Response {
    let root = format!("{action}Response");
    body_response(200, format, serialize(&root, value, format))
}

/// An error answer: `{RequestId, HostId, Code, Message}` with the error's HTTP status.
pub fn error(err: &ApiError, request_id: &str, host_id: &str, format: Format) -> Response {
    let body = ErrorBody {
        request_id,
        host_id,
        code: err.code(),
        message: err.message(),
    };
    body_response(err.status(), format, serialize("Error", &body, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Inner {
        instance_id: String,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Set {
        invoke_instance: Vec<Inner>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Body {
        request_id: String,
        total_count: u64,
        timed: bool,
        stop_time: String,
        invoke_instances: Set,
    }

    fn sample() -> Body {
        Body {
            request_id: "R".into(),
            total_count: 2,
            timed: false,
            stop_time: String::new(),
            invoke_instances: Set {
                invoke_instance: vec![
                    Inner {
                        instance_id: "i-1".into(),
                    },
                    Inner {
                        instance_id: "i-2".into(),
                    },
                ],
            },
        }
    }

    #[test]
    fn json_and_xml_nest_the_same_way() {
        let json = serialize("X", &sample(), Format::Json).unwrap();
        assert_eq!(
            json,
            r#"{"RequestId":"R","TotalCount":2,"Timed":false,"StopTime":"","InvokeInstances":{"InvokeInstance":[{"InstanceId":"i-1"},{"InstanceId":"i-2"}]}}"#
        );
        let xml = serialize("DescribeInvocationsResponse", &sample(), Format::Xml).unwrap();
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DescribeInvocationsResponse><RequestId>R</RequestId><TotalCount>2</TotalCount><Timed>false</Timed><StopTime></StopTime><InvokeInstances><InvokeInstance><InstanceId>i-1</InstanceId></InvokeInstance><InvokeInstance><InstanceId>i-2</InstanceId></InvokeInstance></InvokeInstances></DescribeInvocationsResponse>"
        );
    }

    #[test]
    fn xml_escapes_text() {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct T {
            output: String,
        }
        let xml = serialize(
            "R",
            &T {
                output: "<a & 'b'>".into(),
            },
            Format::Xml,
        )
        .unwrap();
        // Apostrophes need no escaping in element text.
        assert!(
            xml.contains("<Output>&lt;a &amp; 'b'&gt;</Output>"),
            "{xml}"
        );
    }

    #[test]
    fn xml_is_well_formed_whatever_the_text() {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct T {
            name: String,
            output: String,
        }
        let value = T {
            name: "a\u{1}b\u{0}c\u{FFFF}d\te\nf".into(),
            output: "nul \u{0} esc \u{1b}[0m".into(),
        };
        let xml = serialize("R", &value, Format::Xml).unwrap();
        assert!(!xml.chars().any(forbidden_in_xml), "{xml:?}");
        assert!(
            xml.contains("<Name>a\u{FFFD}b\u{FFFD}c\u{FFFD}d\te\nf</Name>"),
            "{xml:?}"
        );
        let mut reader = quick_xml::Reader::from_str(&xml);
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("not well-formed: {e}: {xml:?}"),
            }
        }
        // JSON carries every character (escaped).
        let json = serialize("R", &value, Format::Json).unwrap();
        assert!(json.contains("\\u0000"), "{json}");
    }

    #[test]
    fn carriage_returns_survive_xml() {
        // Found by the `xml` fuzz target: an XML parser reads a literal CR (and CR LF)
        // in text as LF, so Windows output or a description with CR LF lost its CRs.
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct T {
            output: String,
        }
        let text = "line one\r\nline two\r";
        let xml = serialize(
            "R",
            &T {
                output: text.into(),
            },
            Format::Xml,
        )
        .unwrap();
        assert!(!xml.contains('\r'), "{xml:?}");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let output = doc.root_element().first_element_child().unwrap();
        assert_eq!(output.text(), Some(text));
    }

    #[test]
    fn format_param() {
        assert_eq!(Format::from_param(Some("xml")), Format::Xml);
        assert_eq!(Format::from_param(Some("JSON")), Format::Json);
        assert_eq!(Format::from_param(None), Format::Json);
    }
}
