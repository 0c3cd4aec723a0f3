-- Claims take pending webhooks in id order: an index in that order, over pending rows only,
-- lets a claim read the first few instead of sorting every pending row (a backlog of
-- thousands made each claim sort them all).
DROP INDEX inbound_webhooks_pending;
CREATE INDEX inbound_webhooks_pending ON inbound_webhooks (id) WHERE status = 'pending';
