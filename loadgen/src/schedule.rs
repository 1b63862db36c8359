//! The open-loop schedule and the orders it sends: pure, seeded, no clock.

use std::time::Duration;

use pizza::domain::{Menu, OrderRequest};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// When the i-th order is due, counted from the start: `i / rate`, whatever the system does.
pub fn due(i: u64, rate_per_sec: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate_per_sec)
}

/// How many orders a run of `secs` at `rate` sends.
pub fn count(rate_per_sec: f64, secs: f64) -> u64 {
    (rate_per_sec * secs).round() as u64
}

/// Random orders from the menu, the same for the same seed.
pub struct Orders {
    rng: ChaCha8Rng,
    menu: Menu,
    customers: u32,
}

impl Orders {
    /// Orders for `customers` distinct customers.
    pub fn new(seed: u64, menu: Menu, customers: u32) -> Orders {
        Orders {
            rng: ChaCha8Rng::seed_from_u64(seed),
            menu,
            customers: customers.max(1),
        }
    }

    fn pick<'a>(&mut self, items: &'a [String]) -> &'a String {
        &items[(self.rng.next_u32() as usize) % items.len()]
    }

    /// The next order, and an id for it (8 hex characters from the same stream).
    pub fn next(&mut self) -> (u32, OrderRequest) {
        let menu = self.menu.clone();
        let customer = self.rng.next_u32() % self.customers;
        let extras_mask = self.rng.next_u32();
        let req = OrderRequest {
            username: format!("load{customer}"),
            sauce: self.pick(&menu.sauces).clone(),
            cheese: self.pick(&menu.cheeses).clone(),
            main_topping: self.pick(&menu.main_toppings).clone(),
            extra_toppings: menu
                .extra_toppings
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    extras_mask & (1 << (i % 32)) != 0 && extras_mask.rotate_left(7) & (1 << (i % 32)) != 0
                })
                .map(|(_, e)| e.clone())
                .collect(),
        };
        (self.rng.next_u32(), req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_fixed_by_the_rate() {
        assert_eq!(due(0, 1000.0), Duration::ZERO);
        assert_eq!(due(1500, 1000.0), Duration::from_millis(1500));
        assert_eq!(count(200.0, 10.0), 2000);
    }

    #[test]
    fn orders_are_valid_and_seeded() {
        let menu = Menu::default();
        let mut a = Orders::new(7, menu.clone(), 10);
        let mut b = Orders::new(7, menu.clone(), 10);
        let mut c = Orders::new(8, menu.clone(), 10);
        let (xs, ys, zs): (Vec<_>, Vec<_>, Vec<_>) = (0..50).map(|_| (a.next(), b.next(), c.next())).fold(
            (vec![], vec![], vec![]),
            |mut acc, (x, y, z)| {
                acc.0.push(x);
                acc.1.push(y);
                acc.2.push(z);
                acc
            },
        );
        assert_eq!(xs, ys, "same seed, same orders");
        assert_ne!(xs, zs, "another seed, other orders");
        for (_, req) in &xs {
            assert_eq!(menu.validate(req), Ok(()));
        }
        assert!(xs.iter().any(|(_, r)| !r.extra_toppings.is_empty()));
    }
}
