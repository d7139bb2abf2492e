//! W3C trace context (`traceparent` / `tracestate`) carried on every record, so a
//! conversation across agents and processes is one trace.

use std::fmt;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::error::RuntimeError;

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
        // Written for every record produced: no formatting machinery, one allocation.
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.span_id);
        s.push('-');
        push_hex(&mut s, &[self.flags]);
        s
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

impl TraceContext {
    /// This context as the (remote) parent of an OpenTelemetry span.
    pub fn to_otel(&self) -> opentelemetry::Context {
        let state = self
            .tracestate
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let span = SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            state,
        );
        opentelemetry::Context::new().with_remote_span_context(span)
    }

    /// The context of an OpenTelemetry span, if it has valid ids.
    pub fn from_otel(span: &SpanContext) -> Option<Self> {
        if !span.is_valid() {
            return None;
        }
        let state = span.trace_state().header();
        Some(Self {
            trace_id: span.trace_id().to_bytes(),
            span_id: span.span_id().to_bytes(),
            flags: span.trace_flags().to_u8(),
            tracestate: (!state.is_empty()).then_some(state),
        })
    }
}

/// Starts `span` as the child of `parent` (the context a record or request came
/// with) and returns the context of the work done inside it, which the messages it
/// sends carry: the span's own ids when OpenTelemetry records the span, else a new
/// span id in `parent`'s trace (or a new trace), so propagation works either way.
pub fn start_span(span: &tracing::Span, parent: Option<&TraceContext>) -> TraceContext {
    if !span.is_disabled() {
        if let Some(parent) = parent {
            // Fails only when the span is not recorded by OpenTelemetry; the
            // fallback below then keeps the trace.
            let _ = span.set_parent(parent.to_otel());
        }
        let otel = span.context();
        if let Some(own) = TraceContext::from_otel(otel.span().span_context()) {
            return TraceContext {
                tracestate: own
                    .tracestate
                    .or_else(|| parent.and_then(|p| p.tracestate.clone())),
                ..own
            };
        }
    }
    parent.map_or_else(TraceContext::new_root, TraceContext::child)
}

/// The context of the current tracing span when OpenTelemetry records it: what a
/// message sent from application code (outside a handler) carries as its parent.
pub fn current() -> Option<TraceContext> {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    TraceContext::from_otel(span.context().span().span_context())
}

/// Records how handling ended on a handling span (`Delivery::handling_span`): `ok`, `error` (the handler or
/// its outputs failed; the span's status is then an error) or `retry` (not done: the
/// record stays uncommitted and is delivered again).
pub(crate) fn record_outcome(span: &tracing::Span, error: Option<&RuntimeError>, done: bool) {
    if span.is_disabled() {
        return;
    }
    let outcome = match (error, done) {
        (_, false) => "retry",
        (Some(_), true) => "error",
        (None, true) => "ok",
    };
    span.record("switchboard.outcome", outcome);
    if let Some(e) = error {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_message", e.to_string());
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
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
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Appends `bytes` as lowercase hex digits.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Parses exactly `out.len() * 2` lowercase hex digits (W3C trace context allows no
/// upper case) into `out`.
fn hex_decode(s: &str, out: &mut [u8]) -> Option<()> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if s.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
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
    fn without_opentelemetry_a_span_still_continues_the_trace() {
        let parent = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        )
        .unwrap();
        let span = tracing::debug_span!("test");
        let own = start_span(&span, Some(&parent));
        assert_eq!(own.trace_id, parent.trace_id);
        assert_ne!(own.span_id, parent.span_id);
        let root = start_span(&span, None);
        assert_ne!(root.trace_id, parent.trace_id);
        assert_eq!(current(), None);
    }

    #[test]
    fn otel_contexts_round_trip() {
        let ctx = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("k=v"),
        )
        .unwrap();
        let otel = ctx.to_otel();
        assert_eq!(
            TraceContext::from_otel(otel.span().span_context()),
            Some(ctx)
        );
    }

    #[test]
    fn every_byte_round_trips_through_hex() {
        for b in 0..=255u8 {
            let text = hex(&[b]);
            assert_eq!(text, format!("{b:02x}"));
            let mut back = [0u8; 1];
            assert_eq!(hex_decode(&text, &mut back), Some(()));
            assert_eq!(back[0], b);
        }
        assert_eq!(hex_decode("0g", &mut [0u8; 1]), None);
        assert_eq!(hex_decode("000", &mut [0u8; 1]), None);
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
