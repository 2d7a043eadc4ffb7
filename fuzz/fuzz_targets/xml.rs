//! Responses rendered by `oca_api::render` (`ok` and `error`, the server's own entry
//! points) with arbitrary strings in them.
//!
//! Input: text; the whole of it is one field (an output, an error message), and its
//! pieces between U+001F characters fill the others.
//!
//! Properties: the XML answer is a well-formed XML 1.0 document (`roxmltree`, which
//! refuses the characters XML forbids), with the right root element, and each string
//! reads back from it exactly, but for the characters XML cannot carry, which read as
//! U+FFFD; the JSON answer reads back to exactly the value rendered.
#![no_main]

use axum::response::Response;
use libfuzzer_sys::fuzz_target;
use oca_api::error::ApiError;
use oca_api::render::{self, forbidden_in_xml, Format};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Shaped like DescribeInvocations' answer: nested lists, renamed and optional fields,
/// numbers and booleans beside the strings.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    request_id: String,
    total_count: u64,
    next_token: String,
    invocations: Invocations,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Invocations {
    invocation: Vec<Invocation>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Invocation {
    invoke_id: String,
    command_name: String,
    #[serde(rename = "Type")]
    command_type: String,
    output: String,
    timed: bool,
    exit_code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    tags: Tags,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Tags {
    tag: Vec<Tag>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    tag_key: String,
    tag_value: String,
}

/// The answer's body (a `Full` body: ready at once).
fn body_of(resp: Response) -> String {
    let fut = axum::body::to_bytes(resp.into_body(), usize::MAX);
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(bytes)) => String::from_utf8(bytes.to_vec()).expect("UTF-8 answers"),
        other => panic!("the body is not ready: {other:?}"),
    }
}

/// What XML carries of `s`.
fn in_xml(s: &str) -> String {
    s.chars()
        .map(|c| if forbidden_in_xml(c) { '\u{FFFD}' } else { c })
        .collect()
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> roxmltree::Node<'a, 'i> {
    node.children()
        .find(|n| n.has_tag_name(name))
        .unwrap_or_else(|| panic!("no <{name}> in <{}>", node.tag_name().name()))
}

fn children<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.children().filter(move |n| n.has_tag_name(name))
}

/// The text of `<name>` in `node`, which must be text only.
fn text(node: roxmltree::Node, name: &str) -> String {
    let el = child(node, name);
    assert!(
        el.children().all(|n| n.is_text()),
        "<{name}> holds elements"
    );
    el.children().filter_map(|n| n.text()).collect()
}

fn parse_xml(xml: &str) -> roxmltree::Document<'_> {
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("not well-formed: {e}: {xml:?}"))
}

fn check_answer(value: &Answer) {
    let json = body_of(render::ok("DescribeInvocations", value, Format::Json));
    let back: Answer = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(&back, value);

    let resp = render::ok("DescribeInvocations", value, Format::Xml);
    assert_eq!(resp.status(), 200);
    let xml = body_of(resp);
    let doc = parse_xml(&xml);
    let root = doc.root_element();
    assert!(root.has_tag_name("DescribeInvocationsResponse"));
    assert_eq!(text(root, "RequestId"), in_xml(&value.request_id));
    assert_eq!(text(root, "TotalCount"), value.total_count.to_string());
    assert_eq!(text(root, "NextToken"), in_xml(&value.next_token));
    let invocations: Vec<_> = children(child(root, "Invocations"), "Invocation").collect();
    assert_eq!(
        invocations.len(),
        value.invocations.invocation.len(),
        "{xml:?}"
    );
    for (el, inv) in invocations.into_iter().zip(&value.invocations.invocation) {
        assert_eq!(text(el, "InvokeId"), in_xml(&inv.invoke_id), "{xml:?}");
        assert_eq!(
            text(el, "CommandName"),
            in_xml(&inv.command_name),
            "{xml:?}"
        );
        assert_eq!(text(el, "Type"), in_xml(&inv.command_type), "{xml:?}");
        assert_eq!(text(el, "Output"), in_xml(&inv.output), "{xml:?}");
        assert_eq!(text(el, "Timed"), inv.timed.to_string());
        assert_eq!(text(el, "ExitCode"), inv.exit_code.to_string());
        match &inv.username {
            Some(u) => assert_eq!(text(el, "Username"), in_xml(u), "{xml:?}"),
            None => assert!(children(el, "Username").next().is_none()),
        }
        let tags: Vec<_> = children(child(el, "Tags"), "Tag").collect();
        assert_eq!(tags.len(), inv.tags.tag.len());
        for (t, tag) in tags.into_iter().zip(&inv.tags.tag) {
            assert_eq!(text(t, "TagKey"), in_xml(&tag.tag_key), "{xml:?}");
            assert_eq!(text(t, "TagValue"), in_xml(&tag.tag_value), "{xml:?}");
        }
    }
}

fn check_error(name: &str, why: &str) {
    let err = ApiError::InvalidParameter(name.to_string(), why.to_string());
    for format in [Format::Json, Format::Xml] {
        let resp = render::error(&err, name, why, format);
        assert_eq!(resp.status().as_u16(), err.status());
        let body = body_of(resp);
        let (request_id, host_id, code, message) = match format {
            Format::Json => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let s = |k: &str| v[k].as_str().unwrap().to_string();
                (s("RequestId"), s("HostId"), s("Code"), s("Message"))
            }
            Format::Xml => {
                let doc = parse_xml(&body);
                let root = doc.root_element();
                assert!(root.has_tag_name("Error"));
                (
                    text(root, "RequestId"),
                    text(root, "HostId"),
                    text(root, "Code"),
                    text(root, "Message"),
                )
            }
        };
        let carried = |s: &str| match format {
            Format::Json => s.to_string(),
            Format::Xml => in_xml(s),
        };
        assert_eq!(request_id, carried(name), "{body:?}");
        assert_eq!(host_id, carried(why), "{body:?}");
        assert_eq!(code, carried(&err.code()));
        assert_eq!(message, carried(&err.message()), "{body:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = String::from_utf8_lossy(data).into_owned();
    let mut pieces = whole.split('\u{1F}').map(str::to_string).cycle();
    let mut next = || pieces.next().unwrap_or_default();
    let count = whole.matches('\u{1F}').count();
    let invocation = (0..1 + count / 6)
        .take(4)
        .map(|i| Invocation {
            invoke_id: next(),
            command_name: next(),
            command_type: next(),
            output: if i == 0 { whole.clone() } else { next() },
            timed: i % 2 == 0,
            exit_code: -(i as i64),
            username: (i % 2 == 1).then(&mut next),
            tags: Tags {
                tag: (0..i)
                    .map(|_| Tag {
                        tag_key: next(),
                        tag_value: next(),
                    })
                    .collect(),
            },
        })
        .collect();
    let answer = Answer {
        request_id: next(),
        total_count: data.len() as u64,
        next_token: next(),
        invocations: Invocations { invocation },
    };
    check_answer(&answer);
    check_error(&next(), &whole);
});
