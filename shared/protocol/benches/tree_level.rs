//! Prints what moving one level of a federated tree costs on the wire (no
//! assertions): a partner's gradient and hessian histograms turned into the
//! protobuf message and its bytes (the partner's side), and the bytes decoded
//! back into the domain statistics (the coordinator's side), with the
//! message's size; and the same for the model tensor a task carries.
//!
//! Together with `cargo bench -p fedprofile-learning --bench trees` (a
//! partner's compute and the coordinator's add-and-decide per level) this
//! splits a tree's time into partner compute, transfer and coordinator work.
//!
//! `cargo bench -p fedprofile-protocol --bench tree_level`; `BENCH_REPEAT`
//! (default 20) sets how many times each figure is measured (the mean is shown).

use std::time::Instant;

use fedprofile_learning::Statistics;
use fedprofile_learning::trees::{Histograms, TreeStatistics};
use fedprofile_protocol::messages::{ClientReply, ResultBody, TrainReport};
use fedprofile_protocol::pb;
use prost::Message;

fn level(nodes: usize, bins_per_node: usize) -> ClientReply {
    let len = nodes * bins_per_node;
    // Deterministic, not compressible: like real sums.
    let grad: Vec<f64> = (0..len)
        .map(|i| ((i as f64) * 0.618_034).sin() * 37.5)
        .collect();
    let hess: Vec<f64> = (0..len)
        .map(|i| ((i as f64) * 0.414_214).cos().abs() * 12.0)
        .collect();
    let h = Histograms::from_parts(nodes, grad, hess, 5_000, 0.0).expect("histograms");
    ClientReply::Result {
        task_id: "run/r1/a0/x3/train/partner-a".into(),
        body: ResultBody::Train(TrainReport::of_statistics(
            Statistics::Trees(TreeStatistics::Level(h)),
            1,
            None,
            false,
        )),
    }
}

fn mean_ms(repeat: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..repeat {
        f();
    }
    start.elapsed().as_secs_f64() * 1e3 / repeat as f64
}

fn main() {
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!("tree level transfer (mean of {repeat}):");
    for (what, nodes, bins) in [
        ("80 features x 64 bins, 32 nodes", 32, 80 * 64),
        (
            "Telco depth 6, deepest level (49 inputs, ~600 bins), 32 nodes",
            32,
            600,
        ),
        ("Telco root (1 node)", 1, 600),
    ] {
        let reply = level(nodes, bins);
        let mut bytes = Vec::new();
        let encode = mean_ms(repeat, || {
            let msg = pb::ClientMessage::from(&reply);
            bytes.clear();
            msg.encode(&mut bytes).expect("encode");
        });
        let decode = mean_ms(repeat, || {
            let msg = pb::ClientMessage::decode(bytes.as_slice()).expect("decode");
            let Some(pb::client_message::Body::Result(r)) = msg.body else {
                panic!("not a result")
            };
            let back = ClientReply::try_from(r).expect("convert");
            std::hint::black_box(back);
        });
        println!(
            "  {what}: {:.2} MB; partner encode {encode:.2} ms, coordinator decode {decode:.2} ms",
            bytes.len() as f64 / 1e6
        );
    }
}
