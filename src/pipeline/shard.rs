//! A shard actor: owns the households whose stable hash routes to it (through the shared
//! membership table) and the station counters of the records routed to it. It only holds
//! state and answers messages; the counting is the pure core's.

use std::sync::Arc;

use actix::{Actor, Context, Handler, MessageResult};

use super::messages::{Collect, Count};
use crate::counters::{Counters, Membership};

/// Mailbox capacity of a shard: a slow shard makes its senders wait.
pub const MAILBOX: usize = 4;

/// One shard.
pub struct Shard {
    /// Which shard this is.
    pub index: usize,
    membership: Arc<Membership>,
    counters: Counters,
}

impl Shard {
    /// An empty shard.
    pub fn new(index: usize, membership: Arc<Membership>) -> Shard {
        let counters = Counters::for_membership(&membership);
        Shard {
            index,
            membership,
            counters,
        }
    }
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

impl Handler<Count> for Shard {
    type Result = ();

    fn handle(&mut self, msg: Count, _ctx: &mut Self::Context) {
        let records = msg.0.records();
        self.counters
            .count_batch(&records, &self.membership, |_, _| {});
    }
}

impl Handler<Collect> for Shard {
    type Result = MessageResult<Collect>;

    fn handle(&mut self, msg: Collect, _ctx: &mut Self::Context) -> Self::Result {
        tracing::trace!(shard = self.index, trigger = msg.trigger, "collected");
        MessageResult(self.counters.clone())
    }
}
