//! A shard actor: owns the households whose stable hash routes to it (through the shared
//! membership table) and the station counters of the records routed to it, kept per input
//! partition so that a partition's state can be checkpointed and moved on its own. It only
//! holds state and answers messages, in mailbox order: batches, then a trigger's or a
//! checkpoint's barrier, which it answers with the counters of exactly the batches before it.
//! The counting is the pure core's.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler};

use super::messages::{Adopt, Barrier, Count, Release, StateBarrier};
use super::metrics::Metrics;
use super::writer::{DeadRecord, Persist};
use crate::counters::{Counters, Membership};

/// Mailbox capacity of a shard: above the ingestor's window of messages in flight per shard
/// ([`super::ingest::WINDOW`]), so that a send is always queued in order at once; the window,
/// not a parked sender, makes the ingestor wait for a slow shard.
pub const MAILBOX: usize = super::ingest::WINDOW + 2;

/// One shard.
pub struct Shard {
    /// Which shard this is.
    pub index: usize,
    membership: Arc<Membership>,
    partitions: BTreeMap<i32, Counters>,
    metrics: Arc<Metrics>,
    dead: Option<crossbeam_channel::Sender<Persist>>,
    delay: Option<std::time::Duration>,
}

impl Shard {
    /// An empty shard.
    pub fn new(index: usize, membership: Arc<Membership>, metrics: Arc<Metrics>) -> Shard {
        Shard {
            index,
            membership,
            partitions: BTreeMap::new(),
            metrics,
            dead: None,
            delay: None,
        }
    }

    /// Start from restored counters per input partition (any shard may hold a partition's
    /// restored counters: the merge is a sum).
    pub fn with_state(mut self, partitions: BTreeMap<i32, Counters>) -> Shard {
        self.partitions = partitions;
        self
    }

    /// Hand malformed records, with their positions, to the writer thread.
    pub fn with_dead_letters(mut self, tx: Option<crossbeam_channel::Sender<Persist>>) -> Shard {
        self.dead = tx;
        self
    }

    /// Sleep this long before counting each batch: a shard slow on purpose, for benchmarks of
    /// back-pressure.
    pub fn with_delay(mut self, delay: Option<std::time::Duration>) -> Shard {
        self.delay = delay;
        self
    }

    /// The counters summed over every input partition.
    pub fn total(&self) -> Counters {
        let mut it = self.partitions.values();
        match it.next() {
            None => Counters::for_membership(&self.membership),
            Some(first) => {
                let mut all = first.clone();
                for c in it {
                    all.merge(c);
                }
                all
            }
        }
    }
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        // /livez's heartbeat, from this shard's own event loop (late while a batch counts)
        self.metrics.beat(self.index);
        ctx.run_interval(super::metrics::HEARTBEAT, |act, _| {
            act.metrics.beat(act.index)
        });
    }
}

impl Handler<Count> for Shard {
    type Result = ();

    fn handle(&mut self, msg: Count, _ctx: &mut Self::Context) {
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        let n = msg.0.len() as i64;
        let mut dead = Vec::new();
        let keep = self.dead.is_some();
        for (p, from, records) in msg.0.partitions() {
            let m = &self.membership;
            let c = self
                .partitions
                .entry(p)
                .or_insert_with(|| Counters::for_membership(m));
            let (valid, unknown, malformed) = (c.valid, c.unknown_household, c.malformed);
            c.count_batch(&records, m, |i, kind| {
                if keep {
                    dead.push(DeadRecord {
                        partition: p,
                        offset: msg.0.offsets.get(from + i).copied().unwrap_or(-1),
                        kind,
                        record: records[i].to_vec(),
                    });
                }
            });
            self.metrics.counted(
                c.valid - valid,
                c.unknown_household - unknown,
                &malformed,
                c,
            );
        }
        if let (Some(tx), false) = (&self.dead, dead.is_empty()) {
            // blocks this shard's own arbiter while the writer is behind: back-pressure, not a growing queue
            if tx.send(Persist::DeadLetters(dead)).is_err() {
                tracing::error!(shard = self.index, "the writer stopped; dead letters lost");
            }
        }
        self.metrics.queue(self.index, -n);
    }
}

impl Handler<Barrier> for Shard {
    type Result = ();

    fn handle(&mut self, msg: Barrier, _ctx: &mut Self::Context) {
        tracing::trace!(shard = self.index, trigger = msg.trigger, "barrier");
        // the coordinator may be gone (a failed run): nothing to answer then
        let _ = msg.reply.send(self.total());
    }
}

impl Handler<StateBarrier> for Shard {
    type Result = ();

    fn handle(&mut self, msg: StateBarrier, _ctx: &mut Self::Context) {
        let _ = msg.reply.send(self.partitions.clone());
    }
}

impl Handler<Adopt> for Shard {
    type Result = ();

    fn handle(&mut self, msg: Adopt, _ctx: &mut Self::Context) {
        for (p, c) in msg.0 {
            match self.partitions.get_mut(&p) {
                Some(mine) => mine.merge(&c),
                None => {
                    self.partitions.insert(p, c);
                }
            }
        }
    }
}

impl Handler<Release> for Shard {
    type Result = ();

    fn handle(&mut self, msg: Release, _ctx: &mut Self::Context) {
        for p in msg.0 {
            self.partitions.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Subset;
    use crate::pipeline::messages::RecordBatch;

    #[test]
    fn counters_are_kept_per_input_partition_and_summed_on_collect() {
        let m = Arc::new(Membership::new(vec![Subset::All], vec![(1, 0, 1), (2, 0, 2)]).unwrap());
        let metrics = Arc::new(Metrics::new(1));
        let sys = actix::System::new();
        let (state, total) = sys.block_on(async {
            let shard = Shard::new(0, m.clone(), metrics.clone()).start();
            let mut b = RecordBatch::default();
            b.push(b"d,1,2,100,p,1", 0, 0);
            b.push(b"d,1,2,100,p,2", 0, 1);
            b.push(b"d,1,2,200,p,1", 3, 0);
            b.push(b"junk", 3, 1);
            b.push(b"d,1,2,100,p,2", 0, 2);
            assert_eq!(b.runs, vec![(0, 2), (3, 4), (0, 5)]);
            metrics.queue(0, b.len() as i64);
            // both barriers are sent behind the batch, before it is counted
            let count = shard.send(Count(b));
            let (tx, state) = futures_channel::oneshot::channel();
            let sent = shard.send(StateBarrier { reply: tx });
            let (tx, total) = futures_channel::oneshot::channel();
            let barrier = shard.send(Barrier {
                trigger: 1,
                reply: tx,
            });
            let (state, total) = (state.await.unwrap(), total.await.unwrap());
            count.await.unwrap();
            sent.await.unwrap();
            barrier.await.unwrap();
            (state, total)
        });
        assert_eq!(state.keys().copied().collect::<Vec<_>>(), vec![0, 3]);
        assert_eq!((state[&0].records, state[&0].valid), (3, 3));
        assert_eq!((state[&3].records, state[&3].valid), (2, 1));
        assert_eq!(state[&3].malformed.total(), 1);
        assert_eq!((total.records, total.valid), (5, 4));
        let s100 = total.stations().get(b"100").unwrap() as usize;
        assert_eq!(total.genpop(s100), 3);
        assert_eq!(metrics.valid.load(std::sync::atomic::Ordering::Relaxed), 4);
        assert_eq!(metrics.malformed(), 1);
        assert_eq!(metrics.queued(0), 0);
    }
}
