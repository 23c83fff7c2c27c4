//! Why a TLS handshake with a peer failed, in words an operator acts on.
//!
//! QUIC carries a refused TLS handshake as a crypto error whose code is `0x100` plus the TLS
//! alert. When this node refused the peer, the alert is the one rustls chose for what was wrong
//! with the peer's certificate (a signature of another CA: `decrypt_error`, an unknown issuer:
//! `unknown_ca`, ...); when the peer refused this node, the alert is the peer's. The words say
//! which side refused and why; the technical text stays for the debug log.

/// Which side refused the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This node refused the peer's certificate.
    Here,
    /// The peer refused this node's certificate.
    Peer,
}

/// TLS alert descriptions (RFC 8446, section 6) that a refused certificate produces.
const BAD_CERTIFICATE: u8 = 42;
const UNSUPPORTED_CERTIFICATE: u8 = 43;
const CERTIFICATE_REVOKED: u8 = 44;
const CERTIFICATE_EXPIRED: u8 = 45;
const CERTIFICATE_UNKNOWN: u8 = 46;
const UNKNOWN_CA: u8 = 48;
const ACCESS_DENIED: u8 = 49;
const DECRYPT_ERROR: u8 = 51;
const CERTIFICATE_REQUIRED: u8 = 116;
const NO_APPLICATION_PROTOCOL: u8 = 120;

/// The cause of a handshake refused with TLS `alert` by `side`. `detail` is the TLS library's
/// own text, when there is one: it tells an expired certificate from one not valid yet, and
/// a certificate for another name from a malformed one.
pub fn in_words(side: Side, alert: u8, detail: &str) -> String {
    let not_yet = detail.contains("not valid yet") || detail.contains("NotValidYet");
    let other_name = detail.contains("not valid for name") || detail.contains("NotValidForName");
    match (side, alert) {
        (Side::Here, UNKNOWN_CA | DECRYPT_ERROR) => {
            "its certificate is not signed by this fleet's CA".into()
        }
        (Side::Peer, UNKNOWN_CA | DECRYPT_ERROR) => {
            "it does not trust this node's certificate: not signed by the CA it trusts".into()
        }
        (Side::Here, CERTIFICATE_EXPIRED) if not_yet => {
            "its certificate is not valid yet (check the clocks of both nodes)".into()
        }
        (Side::Here, CERTIFICATE_EXPIRED) => "its certificate has expired".into(),
        (Side::Peer, CERTIFICATE_EXPIRED) => {
            "it finds this node's certificate expired or not valid yet (check this node's certificate and both clocks)".into()
        }
        (Side::Here, BAD_CERTIFICATE) if other_name => {
            "its certificate names another node than the one configured at this address".into()
        }
        (Side::Here, BAD_CERTIFICATE) => "its certificate is malformed".into(),
        (Side::Peer, BAD_CERTIFICATE | CERTIFICATE_UNKNOWN) => {
            "it refused this node's certificate".into()
        }
        (Side::Here, ACCESS_DENIED) => "its node id is not in known_peers".into(),
        (Side::Peer, ACCESS_DENIED) => {
            "this node's id is not in its known_peers, or this node's certificate has no usable node id".into()
        }
        (Side::Here, UNSUPPORTED_CERTIFICATE) => {
            "its certificate is not made for a node (wrong key usage)".into()
        }
        (Side::Peer, UNSUPPORTED_CERTIFICATE) => {
            "it finds this node's certificate not made for a node (wrong key usage)".into()
        }
        (_, CERTIFICATE_REVOKED) => "a certificate is revoked".into(),
        (Side::Here, CERTIFICATE_REQUIRED) => "it presented no certificate".into(),
        (Side::Peer, CERTIFICATE_REQUIRED) => "it wanted this node's certificate".into(),
        (_, NO_APPLICATION_PROTOCOL) => {
            "it speaks another protocol version (upgrade the older node)".into()
        }
        (Side::Here, _) => format!("the TLS handshake failed here (TLS alert {alert})"),
        (Side::Peer, _) => format!("it refused the TLS handshake (TLS alert {alert})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_of_another_ca_is_said_so_on_either_side() {
        let here = in_words(
            Side::Here,
            DECRYPT_ERROR,
            "invalid peer certificate: BadSignature",
        );
        assert_eq!(here, "its certificate is not signed by this fleet's CA");
        assert_eq!(in_words(Side::Here, UNKNOWN_CA, ""), here);
        assert!(in_words(Side::Peer, DECRYPT_ERROR, "").contains("does not trust this node's"));
    }

    #[test]
    fn the_detail_tells_expired_from_not_yet_valid_and_names_from_malformed() {
        assert_eq!(
            in_words(Side::Here, CERTIFICATE_EXPIRED, "certificate expired: ..."),
            "its certificate has expired"
        );
        assert!(
            in_words(
                Side::Here,
                CERTIFICATE_EXPIRED,
                "certificate not valid yet: ..."
            )
            .contains("not valid yet")
        );
        assert!(
            in_words(
                Side::Here,
                BAD_CERTIFICATE,
                "certificate not valid for name \"node-2\""
            )
            .contains("another node")
        );
        assert_eq!(
            in_words(Side::Peer, 80, ""),
            "it refused the TLS handshake (TLS alert 80)"
        );
    }
}
