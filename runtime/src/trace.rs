//! W3C trace context (`traceparent` / `tracestate`) carried on every record, so a
//! conversation across agents and processes is one trace.

use std::fmt;

/// One span's W3C trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id shared by the whole conversation.
    pub trace_id: [u8; 16],
    /// 8-byte id of the span that produced the record.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
    /// Vendor `tracestate`, passed through untouched.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// A new trace (for a conversation that starts here).
    pub fn new_root() -> Self {
        let id = uuid::Uuid::new_v4().into_bytes();
        Self {
            trace_id: id,
            span_id: random_span_id(),
            flags: 1,
            tracestate: None,
        }
    }

    /// A child span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_span_id(),
            ..self.clone()
        }
    }

    /// Parses a `traceparent` header (version 00); `None` when malformed or all-zero.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex_decode(trace, &mut trace_id)?;
        hex_decode(span, &mut span_id)?;
        let mut f = [0u8; 1];
        hex_decode(flags, &mut f)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags: f[0],
            tracestate: tracestate.map(str::to_owned),
        })
    }

    /// The `traceparent` header value.
    pub fn traceparent(&self) -> String {
        self.to_string()
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }
}

fn random_span_id() -> [u8; 8] {
    let b = uuid::Uuid::new_v4().into_bytes();
    let mut id = [0u8; 8];
    id.copy_from_slice(&b[..8]);
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_children_keep_the_trace() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(tp, Some("k=v")).unwrap();
        assert_eq!(ctx.traceparent(), tp);
        let child = ctx.child();
        assert_eq!(child.trace_id, ctx.trace_id);
        assert_ne!(child.span_id, ctx.span_id);
        assert_eq!(child.tracestate.as_deref(), Some("k=v"));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad, None).is_none(), "{bad}");
        }
    }
}
