//! The identity of a gRPC request: its `authorization: Bearer` metadata or, without one, the client
//! certificate its TLS connection presented, through the [`Authenticator`].
//! The `x-conductor-caller` metadata and a request's own `caller` field are labels only.

use super::{AuthError, Authenticator, Identity, bearer_token};
use crate::config::Config;
use tonic::Request;

/// The metadata key naming who calls (a person, an agent, a service): a label, never an identity.
pub const CALLER_HEADER: &str = "x-conductor-caller";

impl Authenticator {
    /// The identity behind a gRPC request's bearer token, and its caller string (identity, then the
    /// label: the explicit field, else `x-conductor-caller`, else the peer address).
    pub async fn grpc<T>(
        &self,
        config: &Config,
        request: &Request<T>,
        explicit: &str,
    ) -> Result<(Identity, String), crate::Error> {
        let mut values = request.metadata().get_all("authorization").iter();
        let token = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(value), None) => Some(
                value
                    .to_str()
                    .map_err(|_| AuthError::Malformed)
                    .and_then(bearer_token)?,
            ),
            (Some(_), Some(_)) => return Err(AuthError::Ambiguous.into()),
        };
        let certificate = request
            .peer_certs()
            .and_then(|chain| crate::tls::PeerCertificate::from_chain(&chain));
        let identity = self
            .identify_with_certificate(config, token, certificate.as_ref())
            .await?;
        let header = request
            .metadata()
            .get(CALLER_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let label = [explicit, header]
            .into_iter()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| format!("as {:?}", super::sanitize(l)))
            .or_else(|| request.remote_addr().map(|a| format!("grpc {a}")))
            .unwrap_or_else(|| "grpc".to_owned());
        let caller = identity.caller(&label);
        Ok((identity, caller))
    }
}
