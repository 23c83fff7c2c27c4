//! Why a TLS handshake was refused, in words an operator can act on.
//!
//! rustls and quinn describe a refused handshake as, e.g., "the cryptographic handshake failed:
//! error 51: invalid peer certificate: BadSignature", or with "aborted by peer: " in front when
//! the other side refused this node. The words say whose certificate was refused and why: a
//! certificate of another fleet's CA, an expired one, an id not in `known_peers`.

/// The refusal `detail` (a quinn connection error's text) in words.
pub fn in_words(detail: &str) -> String {
    let by_peer = detail.contains("aborted by peer");
    match (cause(detail), by_peer) {
        (Some(cause), false) => format!("its certificate {cause}"),
        (Some(cause), true) => format!(
            "it refused this node's certificate, which by its reckoning {cause} (the two nodes do \
             not share a fleet CA, or this node is not in its known_peers)"
        ),
        (None, false) => format!("handshake refused: {detail}"),
        (None, true) => format!("it refused the handshake: {detail}"),
    }
}

/// What was wrong with the certificate, from rustls' names for it.
fn cause(detail: &str) -> Option<&'static str> {
    const CAUSES: &[(&[&str], &str)] = &[
        (
            &["BadSignature", "UnknownIssuer", "UnknownCA", "unknown ca"],
            "is not signed by this fleet's CA",
        ),
        (
            &["NotValidYet"],
            "is not valid yet (compare the two clocks)",
        ),
        (
            &["Expired"],
            "has expired (issue a new one with `edged ca issue`)",
        ),
        (
            &["ApplicationVerificationFailure"],
            "is signed by the fleet CA but names a node id that is not in known_peers",
        ),
        (
            &["NotValidForName"],
            "names another node id than the one this node dialled",
        ),
        (
            &[
                "NoCertificatesPresented",
                "no certificates",
                "CertificateRequired",
            ],
            "is missing: none was presented",
        ),
        (
            &["NoApplicationProtocol", "no application protocol"],
            "is fine, but the nodes speak different protocol versions (upgrade both)",
        ),
        (&["Revoked"], "has been revoked"),
    ];
    CAUSES
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| detail.contains(n)))
        .map(|(_, words)| *words)
}

/// True when a quinn connection error is a refused TLS handshake (a crypto error).
pub fn is_refusal(e: &quinn::ConnectionError) -> bool {
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        quinn::ConnectionError::TransportError(t) => crypto(t.code),
        quinn::ConnectionError::ConnectionClosed(c) => crypto(c.error_code),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_fleets_certificate_is_said_in_words() {
        let local = in_words(
            "the cryptographic handshake failed: error 51: invalid peer certificate: BadSignature",
        );
        assert_eq!(local, "its certificate is not signed by this fleet's CA");
        let remote = in_words(
            "aborted by peer: the cryptographic handshake failed: error 51: invalid peer certificate: BadSignature",
        );
        assert!(
            remote.starts_with("it refused this node's certificate") && remote.contains("fleet CA"),
            "{remote}"
        );
    }

    #[test]
    fn every_named_cause_has_words_and_the_rest_keeps_its_text() {
        for (detail, words) in [
            ("invalid peer certificate: Expired", "has expired"),
            ("invalid peer certificate: NotValidYet", "not valid yet"),
            (
                "invalid peer certificate: ApplicationVerificationFailure",
                "not in known_peers",
            ),
            ("peer sent no certificates", "none was presented"),
            ("no application protocol", "protocol versions"),
        ] {
            assert!(in_words(detail).contains(words), "{detail}");
        }
        assert_eq!(
            in_words("something new"),
            "handshake refused: something new"
        );
    }
}
