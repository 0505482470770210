//! The lab's traffic again with 1 % loss and reordering on the outside link, both
//! directions (`Lab::impair_outside`): downloads stay intact through SNAT, a port forward
//! and forward mode, 200 parallel downloads all complete, iperf3 TCP and UDP complete.
//! What is asserted is correctness, not speed; each test also checks that the impairment
//! really dropped and held back frames both ways.

mod common;

use common::*;

fn kill(mut c: std::process::Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// Fails the test unless the outside link lost frames both ways and the TCP senders in
/// `senders` (the namespaces that sent the data) saw segments arrive out of order.
fn assert_impaired(lab: &Lab, gw: &Gateway, senders: &[&str]) {
    let imp = lab.impairment();
    let seen: Vec<u64> = senders.iter().map(|r| lab.tcp_reordering_seen(r)).collect();
    eprintln!("outside link: {imp:?}; TCP reordering seen by {senders:?}: {seen:?}");
    assert!(
        imp.dropped.iter().all(|&n| n > 0) && imp.detoured.iter().all(|&n| n > 0),
        "the impairment did not impair: {imp:?}\n{}",
        gw.log()
    );
    assert!(
        seen.iter().all(|&n| n > 0),
        "no reordering seen by the TCP senders {senders:?}: {seen:?}, {imp:?}"
    );
}

#[test]
fn snat_downloads_and_iperf3_survive_loss_and_reordering() {
    let lab = Lab::up("lossnat", 1);
    lab.impair_outside();
    let srv = http_server(&lab, "srv", "198.19.0.2", 8080, "http.log");
    let gw = Gateway::start(&lab, &["--masquerade"]);
    download_10mb_intact(&lab, "cli", "http://198.19.0.2:8080");
    parallel_downloads_intact(&lab, "cli", "http://198.19.0.2:8080", 200);

    let iperf_srv = iperf3_server(&lab);
    let mut out_of_order = 0;
    for udp in [false, true] {
        for reverse in [false, true] {
            let r = iperf3(&lab, udp, reverse, 2);
            eprintln!("iperf3 udp={udp} reverse={reverse}: {r:?}");
            assert!(
                r.bytes > 1_000_000,
                "iperf3 udp={udp} reverse={reverse} moved only {} bytes\n{}",
                r.bytes,
                gw.log()
            );
            if udp {
                assert!(
                    r.lost_percent > 0.0 && r.lost_percent < 20.0,
                    "UDP loss {}% (1 % dropped on the link)",
                    r.lost_percent
                );
                out_of_order += r.out_of_order;
            }
        }
    }
    // The receivers saw the reordering.
    assert!(out_of_order > 0, "no UDP datagram arrived out of order");
    kill(iperf_srv);
    assert_impaired(&lab, &gw, &["cli", "srv"]);
    kill(srv);
}

#[test]
fn port_forward_downloads_survive_loss_and_reordering() {
    let lab = Lab::up("lossdnat", 1);
    lab.impair_outside();
    let web = http_server(&lab, "cli", "198.18.0.2", 80, "inside-http.log");
    let gw = Gateway::start(
        &lab,
        &[
            "--masquerade",
            "--dnat",
            "tcp:198.19.0.1:40080=198.18.0.2:80",
            "--dnat",
            "tcp:198.19.0.1:40081=198.18.0.2:80,snat",
        ],
    );
    for port in [40080u16, 40081] {
        download_10mb_intact(&lab, "srv", &format!("http://198.19.0.1:{port}"));
    }
    assert_impaired(&lab, &gw, &["cli"]);
    kill(web);
}

#[test]
fn forward_mode_downloads_survive_loss_and_reordering() {
    let lab = Lab::up("lossfwd", 1);
    lab.impair_outside();
    let srv = http_server(&lab, "srv", "198.19.0.2", 8080, "http.log");
    let gw = Gateway::start(&lab, &["--mode", "forward"]);
    download_10mb_intact(&lab, "cli", "http://198.19.0.2:8080");
    parallel_downloads_intact(&lab, "cli", "http://198.19.0.2:8080", 200);
    assert_impaired(&lab, &gw, &["srv"]);
    kill(srv);
}
