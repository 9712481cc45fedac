//! Incremental parsing of a server-sent-events byte stream into `data:` payloads.
//!
//! Harmony sends one JSON object per event (`data: {...}\n\n`) and ends with `data: [DONE]`.
//! Network reads split events anywhere, so bytes are buffered until a blank line closes an
//! event. Comments (`:`) and other fields are ignored; multi-line data is joined with `\n` as the
//! SSE specification says.

use bytes::{Buf, BytesMut};

#[derive(Debug, Default)]
pub struct SseParser {
    buffer: BytesMut,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete event's data, if one is buffered.
    pub fn next_event(&mut self) -> Option<String> {
        loop {
            let boundary = find_event_boundary(&self.buffer)?;
            let data = event_data(&self.buffer[..boundary.event_end]);
            self.buffer
                .advance(boundary.event_end + boundary.separator_len);
            if data.is_some() {
                return data;
            }
        }
    }
}

/// The `data:` lines of one event, joined with `\n`; `None` when it has none.
fn event_data(raw_event: &[u8]) -> Option<String> {
    let text = match std::str::from_utf8(raw_event) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(raw_event),
    };
    let mut data: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(value) = line.strip_prefix("data:") else {
            continue;
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match &mut data {
            None => data = Some(value.to_owned()),
            Some(joined) => {
                joined.push('\n');
                joined.push_str(value);
            }
        }
    }
    data
}

struct EventBoundary {
    event_end: usize,
    separator_len: usize,
}

/// The first blank line: `\n\n` or `\r\n\r\n`.
fn find_event_boundary(buffer: &[u8]) -> Option<EventBoundary> {
    let mut from = 0;
    while let Some(offset) = memchr::memchr2(b'\n', b'\r', &buffer[from..]) {
        let index = from + offset;
        let rest = &buffer[index..];
        if rest.starts_with(b"\n\n") {
            return Some(EventBoundary {
                event_end: index,
                separator_len: 2,
            });
        }
        if rest.starts_with(b"\r\n\r\n") {
            return Some(EventBoundary {
                event_end: index,
                separator_len: 4,
            });
        }
        from = index + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in chunks {
            parser.push(chunk);
            while let Some(event) = parser.next_event() {
                events.push(event);
            }
        }
        events
    }

    #[test]
    fn parses_events_split_across_reads_and_skips_comments() {
        let events = collect(&[
            b"data: {\"a\"",
            b":1}\n",
            b"\n: keep-alive\n\ndata: [DONE]\n\n",
        ]);
        assert_eq!(events, vec!["{\"a\":1}".to_owned(), "[DONE]".to_owned()]);
    }

    #[test]
    fn accepts_crlf_and_multiline_data() {
        let events = collect(&[b"data: one\r\ndata: two\r\n\r\n"]);
        assert_eq!(events, vec!["one\ntwo".to_owned()]);
    }

    proptest! {
        #[test]
        fn any_split_of_a_stream_yields_the_same_events(split_points in proptest::collection::vec(0usize..200, 0..10)) {
            let stream = b"data: {\"x\":1}\n\ndata: {\"y\":\"two words\"}\n\n: ping\n\ndata: [DONE]\n\n";
            let mut points: Vec<usize> = split_points.into_iter().map(|p| p % stream.len()).collect();
            points.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for point in points {
                chunks.push(&stream[start..point]);
                start = point;
            }
            chunks.push(&stream[start..]);
            prop_assert_eq!(collect(&chunks), vec!["{\"x\":1}".to_owned(), "{\"y\":\"two words\"}".to_owned(), "[DONE]".to_owned()]);
        }
    }
}
