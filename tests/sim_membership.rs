//! Seeded simulation of failure detection and membership, in virtual time.
//!
//! Each test drives real nodes on the in-memory network and asserts the view
//! every replica converges to and how long it takes: a crash, a stall, two-
//! and one-way partitions, a partition of one replica from one peer only,
//! restarts with new incarnations, graceful leave, operator view changes, and
//! the absence of false removals under delay below the timeout.

mod sim;

use std::time::Duration;

use hearsay::core::ViewChange;
use hearsay::transport::memory::Faults;
use sim::{address, run_seeded, seeds, Cluster};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn without(all: &[String], gone: &str) -> Vec<String> {
    all.iter().filter(|a| *a != gone).cloned().collect()
}

/// Polls in 10 ms steps until every survivor's view equals `expected`.
async fn views_become(
    cluster: &Cluster,
    who: &[String],
    expected: &[String],
    limit: Duration,
) -> Option<Duration> {
    cluster
        .wait_for(limit, ms(10), |c| {
            who.iter().all(|a| c.view_of(a) == expected)
        })
        .await
}

#[test]
fn a_crashed_replica_leaves_every_view_within_two_seconds() {
    for seed in seeds(1, 5) {
        run_seeded(seed, |seed| async move {
            let mut cluster = Cluster::start(5, seed).await;
            sim::sleep_ms(500).await;
            let victim = address(2);
            cluster.kill(&victim);
            let survivors = without(&cluster.addresses, &victim);
            let took = views_become(&cluster, &survivors, &survivors, ms(2000))
                .await
                .ok_or("crashed replica still in a view after 2 s")?;
            Ok(format!("detected in {took:?}"))
        });
    }
}

#[test]
fn a_one_second_stall_removes_nobody() {
    for seed in seeds(10, 5) {
        run_seeded(seed, |seed| async move {
            let cluster = Cluster::start(3, seed).await;
            sim::sleep_ms(300).await;
            let stalled = address(1);
            let others = without(&cluster.addresses, &stalled);
            // A stopped process neither sends nor answers.
            cluster
                .net
                .partition(std::slice::from_ref(&stalled), &others);
            let removed = cluster
                .wait_for(ms(1000), ms(5), |c| {
                    others.iter().any(|a| c.view_of(a).len() < 3)
                })
                .await;
            cluster.net.heal();
            if let Some(at) = removed {
                return Err(format!("a live replica was removed after {at:?} of stall"));
            }
            let after = cluster
                .wait_for(ms(1000), ms(5), |c| {
                    c.addresses.iter().any(|a| c.view_of(a).len() < 3)
                })
                .await;
            match after {
                Some(at) => Err(format!("removed {at:?} after the stall ended")),
                None => Ok("no removal".into()),
            }
        });
    }
}

#[test]
fn delay_below_the_timeout_causes_no_false_removal() {
    for seed in seeds(20, 3) {
        run_seeded(seed, |seed| async move {
            let cluster = Cluster::start(5, seed).await;
            cluster.set_faults(Faults {
                drop: 0.0,
                duplicate: 0.05,
                min_delay_ms: 10,
                max_delay_ms: 150,
            });
            let removed = cluster
                .wait_for(ms(10_000), ms(10), |c| {
                    c.addresses.iter().any(|a| c.view_of(a).len() < 5)
                })
                .await;
            match removed {
                Some(at) => Err(format!("false removal after {at:?} under delay")),
                None => Ok("10 s of 10–150 ms delay without a removal".into()),
            }
        });
    }
}

#[test]
fn partitions_shrink_views_and_healing_restores_them() {
    for seed in seeds(30, 3) {
        run_seeded(seed, |seed| async move {
            let cluster = Cluster::start(5, seed).await;
            let all = cluster.addresses.clone();
            let (left, right) = all.split_at(2);
            cluster.net.partition(left, right);
            views_become(&cluster, left, left, ms(2500))
                .await
                .ok_or("minority view")?;
            views_become(&cluster, right, right, ms(2500))
                .await
                .ok_or("majority view")?;
            cluster.net.heal();
            let took = views_become(&cluster, &all, &all, ms(2000))
                .await
                .ok_or("views not whole 2 s after healing")?;
            Ok(format!("rejoined in {took:?}"))
        });
    }
}

#[test]
fn an_isolated_replica_finds_its_way_back() {
    run_seeded(40, |seed| async move {
        let cluster = Cluster::start(3, seed).await;
        let all = cluster.addresses.clone();
        let lonely = address(0);
        let rest = without(&all, &lonely);
        cluster.net.partition(std::slice::from_ref(&lonely), &rest);
        views_become(
            &cluster,
            std::slice::from_ref(&lonely),
            std::slice::from_ref(&lonely),
            ms(2500),
        )
        .await
        .ok_or("isolated replica still sees others")?;
        // Long enough that probes have backed off to their slow rate.
        sim::sleep_ms(5000).await;
        cluster.net.heal();
        let took = views_become(&cluster, &all, &all, ms(2000))
            .await
            .ok_or("no way back")?;
        Ok(format!("back in {took:?}"))
    });
}

#[test]
fn one_way_and_non_transitive_partitions() {
    run_seeded(50, |seed| async move {
        let cluster = Cluster::start(3, seed).await;
        let (a, b, c) = (address(0), address(1), address(2));
        // Messages from a to b are lost; b to a still arrive. b's heartbeats
        // reach a (so a keeps b), but a's answers and heartbeats never reach
        // b (so b drops a).
        cluster.net.cut(&a, &b);
        let expect_a = sorted(vec![a.clone(), c.clone()]);
        let expect_b = sorted(vec![b.clone(), c.clone()]);
        let all = cluster.addresses.clone();
        cluster
            .wait_for(ms(2500), ms(10), |cl| cl.view_of(&b) == expect_b)
            .await
            .ok_or("one-way cut not reflected in b's view")?;
        if cluster.view_of(&a) != all {
            return Err(format!(
                "a hears b and must keep it: {:?}",
                cluster.view_of(&a)
            ));
        }
        if cluster.view_of(&c) != all {
            return Err("c reaches both and must keep both".into());
        }
        cluster.net.heal();
        views_become(&cluster, &all, &all, ms(2000))
            .await
            .ok_or("one-way heal")?;
        // Non-transitive: a and b cannot talk at all; c talks to both.
        cluster
            .net
            .partition(std::slice::from_ref(&a), std::slice::from_ref(&b));
        cluster
            .wait_for(ms(2500), ms(10), |cl| {
                cl.view_of(&a) == expect_a && cl.view_of(&b) == expect_b
            })
            .await
            .ok_or("non-transitive cut not reflected")?;
        let during = cluster.view_of(&c);
        cluster.net.heal();
        views_become(&cluster, &all, &all, ms(2000))
            .await
            .ok_or("non-transitive heal")?;
        if during != all {
            return Err(format!("c dropped someone it can reach: {during:?}"));
        }
        Ok("asymmetric views as expected".into())
    });
}

#[test]
fn a_restarted_replica_returns_with_a_new_incarnation_and_catches_up() {
    run_seeded(60, |seed| async move {
        let mut cluster = Cluster::start(3, seed).await;
        let all = cluster.addresses.clone();
        let victim = address(2);
        let old_incarnation = cluster.node(&victim).incarnation();
        cluster.kill(&victim);
        let survivors = without(&all, &victim);
        views_become(&cluster, &survivors, &survivors, ms(2000))
            .await
            .ok_or("not detected")?;
        let writer = cluster.node(&survivors[0]).clone();
        writer
            .write("while-down", Some("1".into()), &Default::default())
            .await
            .map_err(|e| format!("{e:?}"))?;
        cluster.restart(&victim).await;
        let took = views_become(&cluster, &all, &all, ms(2000))
            .await
            .ok_or("not back in views")?;
        let new_incarnation = cluster.node(&victim).incarnation();
        if new_incarnation <= old_incarnation {
            return Err("incarnation did not grow".into());
        }
        for peer in &survivors {
            let seen = cluster
                .node(peer)
                .members()
                .into_iter()
                .find(|m| m.address == victim)
                .unwrap();
            if seen.incarnation != Some(new_incarnation) {
                return Err(format!(
                    "{peer} still knows incarnation {:?}",
                    seen.incarnation
                ));
            }
        }
        cluster
            .wait_for(ms(1000), ms(10), |c| {
                c.contents(&victim).contains_key("while-down")
            })
            .await
            .ok_or("restarted replica did not catch up on a write made while it was down")?;
        Ok(format!("back in every view {took:?} after start"))
    });
}

#[test]
fn graceful_leave_is_immediate_and_hands_off_writes() {
    run_seeded(70, |seed| async move {
        let mut cluster = Cluster::start(3, seed).await;
        let all = cluster.addresses.clone();
        let leaving = address(0);
        let survivors = without(&all, &leaving);
        let node = cluster.node(&leaving).clone();
        // No virtual time passes between these writes and the leave, so no
        // gossip round has carried them: only the hand-off can.
        for i in 0..20 {
            node.write(&format!("k{i}"), Some("7".into()), &Default::default())
                .await
                .map_err(|e| format!("{e:?}"))?;
        }
        cluster.stop_gracefully(&leaving).await;
        let took = views_become(&cluster, &survivors, &survivors, ms(500))
            .await
            .ok_or("leaver still in views 500 ms after leaving")?;
        for peer in &survivors {
            let contents = cluster.contents(peer);
            if (0..20).any(|i| !contents.contains_key(&format!("k{i}"))) {
                return Err(format!("{peer} lacks handed-off writes"));
            }
        }
        Ok(format!("left views in {took:?}"))
    });
}

#[test]
fn operator_removal_sticks_until_the_replica_announces_itself() {
    run_seeded(80, |seed| async move {
        let mut cluster = Cluster::start(3, seed).await;
        let all = cluster.addresses.clone();
        let (a, c) = (address(0), address(2));
        if cluster.node(&a).view_remove(&c) != ViewChange::Deleted {
            return Err("delete not accepted".into());
        }
        let rest = without(&all, &c);
        views_become(&cluster, &rest, &rest, ms(1000))
            .await
            .ok_or("removal did not spread")?;
        // c keeps heartbeating for a while: it must not come back.
        let readded = cluster
            .wait_for(ms(3000), ms(10), |cl| {
                rest.iter().any(|p| cl.view_of(p).contains(&c))
            })
            .await;
        if readded.is_some() {
            return Err("removed replica re-added by its own gossip".into());
        }
        // Restarting c makes it announce itself.
        cluster.restart(&c).await;
        views_become(&cluster, &all, &all, ms(1000))
            .await
            .ok_or("announce did not re-add")?;
        // Adding an address where nothing runs: admitted (and probed), but
        // never in a view, since nothing is known to run there.
        let ghost = address(9);
        if cluster.node(&a).view_add(&ghost).await != ViewChange::Added {
            return Err("add not accepted".into());
        }
        let listed = cluster
            .wait_for(ms(3000), ms(10), |cl| {
                all.iter().any(|p| cl.view_of(p).contains(&ghost))
            })
            .await;
        if let Some(at) = listed {
            return Err(format!(
                "an address nobody answers at is in a view after {at:?}"
            ));
        }
        Ok("operator changes spread and stick".into())
    });
}
