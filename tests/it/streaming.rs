//! Bodies stream both ways: a 1 GiB upload and a 1 GiB download pass with flat memory.

use futures_util::stream;

use crate::common::{http_client, one_group, Backend, Ballast};

const GIB: u64 = 1 << 30;
/// Far below the 1 GiB that passes: ballast holds only buffers in flight.
const MAX_PEAK_KIB: u64 = 96 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_up_and_down_with_flat_memory() {
    let backend = Backend::start("big").await;
    let ballast = Ballast::start(&one_group(&backend.target(), ""));
    let client = http_client();

    let chunk = bytes::Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks = GIB / chunk.len() as u64;
    let body = stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = client
        .post(format!("{}/upload", ballast.url("lb")))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("upload answered");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), GIB.to_string(), "the target received every byte");

    let mut resp = client.get(format!("{}/download/{GIB}", ballast.url("lb"))).send().await.expect("download");
    assert_eq!(resp.status(), 200);
    let mut received: u64 = 0;
    while let Some(chunk) = resp.chunk().await.expect("body chunk") {
        received += chunk.len() as u64;
    }
    assert_eq!(received, GIB);

    let peak = ballast.peak_rss_kib();
    assert!(peak > 0 && peak < MAX_PEAK_KIB, "ballast peak memory {peak} KiB for 2 GiB through");
}
