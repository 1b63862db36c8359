//! Criterion benchmarks of the pizza shop live in `benches/benches/hot_paths.rs`
//! (`cargo bench -p pizza-benches`); this library gives them realistic inputs.

use pizza::domain::{customer_id_for, encode, Assembled, Order, OrderId, Ordered, StatusEvent, StatusOnly};
use pizza::view::ViewUpdate;

/// `n` order ids as the shop makes them (8 hex characters), spread like random UUID tails.
pub fn order_ids(n: u32) -> Vec<OrderId> {
    (0..n).map(|i| OrderId::nth(i, 0)).collect()
}

/// A pizza-ordered event.
pub fn ordered(i: u32) -> Ordered {
    Ordered {
        status: 100,
        timestamp: Some(1_700_000_000_000 + i64::from(i)),
        order: Order {
            extra_toppings: vec!["Mushroom".into(), "Onion".into()],
            sauce: "Tomato".into(),
            cheese: "Mozzarella".into(),
            main_topping: "Pepperoni".into(),
            customer_id: customer_id_for(&format!("user{}", i % 100)),
            username: format!("user{}", i % 100),
        },
    }
}

/// Each topic's payload, as bytes on the wire.
pub fn payloads() -> [(&'static str, Vec<u8>); 6] {
    [
        ("pizza-ordered", encode(&ordered(1))),
        (
            "pizza-assembled",
            encode(&Assembled {
                status: 200,
                baking_time: 12,
                timestamp: Some(1),
            }),
        ),
        (
            "pizza-baked",
            encode(&StatusOnly {
                status: 300,
                timestamp: Some(1),
            }),
        ),
        (
            "pizza-delivered",
            encode(&StatusOnly {
                status: 999,
                timestamp: Some(1),
            }),
        ),
        (
            "pizza-pending",
            encode(&StatusOnly {
                status: 150,
                timestamp: Some(1),
            }),
        ),
        (
            "pizza-status",
            encode(&StatusEvent {
                status: 999,
                timestamp: Some(1),
                observed_status: None,
            }),
        ),
    ]
}

/// The view updates `orders` orders make, in log order: details, then 100, 200, 300, 999 each
/// (5 updates an order), interleaved across orders as a busy shop interleaves them.
pub fn view_updates(orders: u32) -> Vec<ViewUpdate> {
    let ids = order_ids(orders);
    let mut out = Vec::with_capacity(orders as usize * 5);
    for (i, id) in ids.iter().enumerate() {
        let o = ordered(i as u32);
        out.push(ViewUpdate::Details {
            order_id: id.to_string(),
            order: o.order,
            ordered_at_ms: 1,
            home: true,
        });
    }
    for (step, status) in [100, 200, 300, 999].into_iter().enumerate() {
        for id in &ids {
            out.push(ViewUpdate::Status {
                order_id: id.to_string(),
                status,
                ts: step as i64,
                observed: None,
            });
        }
    }
    out
}
