//! The orchestrator as a gRPC daemon: health checks and reflection (v1 and v1alpha), so that any gRPC
//! client with reflection (grpcurl included) can list and call its services.

use crate::common;

use common::*;
use conductor_servers::testing::{reflection_services_v1, reflection_services_v1alpha};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::test]
async fn health_and_reflection_in_both_protocol_versions() {
    let h = Harness::shipped().await;
    let channel = tonic::transport::Endpoint::from_shared(h.orchestrator.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    for service in ["", "conductor.v1.Orchestrator"] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let status = HealthClient::new(channel.clone())
            .check(request)
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }
    let expected = ["conductor.v1.Orchestrator", "grpc.health.v1.Health"];
    for services in [
        reflection_services_v1(channel.clone()).await,
        reflection_services_v1alpha(channel.clone()).await,
    ] {
        for name in expected {
            assert!(
                services.iter().any(|s| s == name),
                "{name} missing from {services:?}"
            );
        }
    }
}
