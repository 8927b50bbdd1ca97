//! PCCS answers: any bytes as the server's answer to the probe's GET, through hyper and
//! the verdicts; the collateral dates in the body; and the URL parser (a URL it takes
//! prints as a URL that parses to the same).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use cchost::dcap::collateral::next_update;
use cchost::dcap::pccs::{Fetch, Url, exchange, judge};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(u) = Url::parse(s)
    {
        assert_eq!(Url::parse(&u.to_string()).as_ref(), Ok(&u), "{s:?}");
    }
    let url = Url::parse("https://pccs:8081/sgx/certification/v4/rootcacrl").unwrap();
    let raw = data.to_vec();
    let fetch = runtime().block_on(async {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let mut req = [0u8; 4096];
            let _ = server.read(&mut req).await;
            let _ = server.write_all(&raw).await;
            let _ = server.shutdown().await;
        });
        exchange(client, &url, None, Duration::from_secs(10)).await
    });
    // The whole answer was there: never a timeout.
    assert!(!matches!(fetch, Fetch::NoAnswer(_)), "{fetch:?}");
    let _ = judge(&fetch, &url);
    if let Fetch::Answer(a) = &fetch {
        let _ = next_update(&a.body, 1_700_000_000);
    }
});
