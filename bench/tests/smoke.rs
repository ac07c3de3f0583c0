//! The bench's core against in-process servers: a few hundred calls over each path (direct gRPC,
//! orchestrated gRPC, MCP), a probe of the disk, and the policy fixture. It asserts only that the
//! numbers are sane (counts add up, latencies positive): no timing assertions on a shared machine.

use conductor_bench::decisions;
use conductor_bench::fsync;
use conductor_bench::load::{Connections, Route, round};
use conductor_bench::mcp_load::{self, McpCall};
use conductor_bench::scenario::{
    PREREQUISITE, PREREQUISITE_ARGS, ServerUrls, TOOL, TOOL_ARGS, orchestrator_config,
};
use conductor_servers::ServerKind;

fn sane(summary: &conductor_bench::stats::Summary, calls: u64) {
    assert_eq!(summary.calls, calls, "{summary:?}");
    assert!(
        summary.p50_us > 0.0 && summary.p50_us <= summary.p99_us,
        "{summary:?}"
    );
    assert!(summary.calls_per_s > 0.0, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_core_produces_sane_numbers() {
    let servers = conductor_servers::testing::spawn_all().await;
    let url = |kind| servers.get(kind).url();
    let urls = ServerUrls {
        validation: url(ServerKind::Validation),
        processing: url(ServerKind::Processing),
        backup: url(ServerKind::Backup),
        notification: url(ServerKind::Notification),
        approval: url(ServerKind::Approval),
    };
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = conductor_orchestrator::testing::spawn(
        &orchestrator_config(&urls, None),
        None,
        audit.path(),
    )
    .await
    .expect("the orchestrator starts");

    let direct = Connections::open(Route::Direct, &urls.processing, 8)
        .await
        .expect("connect");
    sane(
        &round(&direct, 1, 100).await.expect("direct c=1").summary,
        100,
    );
    sane(
        &round(&direct, 8, 200).await.expect("direct c=8").summary,
        200,
    );

    let orchestrated = Connections::open(Route::Orchestrated, &orchestrator.grpc_url(), 8)
        .await
        .expect("connect");
    sane(
        &round(&orchestrated, 1, 100)
            .await
            .expect("orchestrated c=1")
            .summary,
        100,
    );
    sane(
        &round(&orchestrated, 8, 200)
            .await
            .expect("orchestrated c=8")
            .summary,
        200,
    );

    let mcp_url = format!("{}/mcp", orchestrator.http_url());
    assert!(mcp_load::available(&mcp_url).await, "/mcp answers");
    let call = McpCall::new(TOOL, TOOL_ARGS)
        .unwrap()
        .after(PREREQUISITE, PREREQUISITE_ARGS)
        .unwrap();
    sane(
        &mcp_load::round(&mcp_url, &call, 4, 100)
            .await
            .expect("MCP c=4")
            .summary,
        100,
    );

    sane(
        &fsync::probe(audit.path(), 20).expect("fdatasync probe"),
        20,
    );
    // Figure 0's probes, taking their samples in two blocks as the figure interleaves them.
    for kind in [
        fsync::ProbeKind::Floor,
        fsync::ProbeKind::InPlace,
        fsync::ProbeKind::Append,
    ] {
        let mut probe = fsync::Probe::new(audit.path(), kind, 20).expect("probe");
        probe.sample(10).expect("first block");
        probe.sample(10).expect("second block");
        sane(&probe.finish(std::time::Duration::from_millis(1)), 20);
    }
    let figures = decisions::measure(100, 100, 2_000, 1);
    assert!(figures.p50_ns > 0.0 && figures.mean_ns > 0.0, "{figures:?}");

    orchestrator.stop().await;
    servers.stop().await;
}
