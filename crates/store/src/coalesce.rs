//! Coalescing concurrent writes of one kind into batches: whoever submits while a batch is
//! being written waits for the next one, which carries everything that queued up meanwhile.
//! Each caller is answered once the batch carrying its item has committed, so batching never
//! answers early; it only shares one statement and one commit among many callers. A database
//! that commits concurrent transactions together (PostgreSQL) may have several batches in
//! flight, so one batch is written while another waits for its commit.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::{Result, StoreError};

type Reply<O> = oneshot::Sender<Result<O>>;

struct Queue<I, O> {
    waiting: Vec<(I, Reply<O>)>,
    /// Flush tasks running; each takes whatever waits until nothing does.
    flushing: usize,
}

pub(crate) struct Coalescer<I, O> {
    queue: Arc<Mutex<Queue<I, O>>>,
    max_batch: usize,
    max_flushing: usize,
}

impl<I: Send + 'static, O: Send + 'static> Coalescer<I, O> {
    /// Batches of at most `max_batch` items, at most `max_flushing` of them written at once.
    pub(crate) fn new(max_batch: usize, max_flushing: usize) -> Self {
        Self {
            queue: Arc::new(Mutex::new(Queue { waiting: Vec::new(), flushing: 0 })),
            max_batch,
            max_flushing: max_flushing.max(1),
        }
    }

    /// Queues `item` and waits for its batch. `write` writes one batch and answers per item,
    /// in order; a caller that finds fewer flushes running than allowed starts one with its
    /// `write` (a task of its own, so a caller that goes away cannot strand the others).
    pub(crate) async fn submit<W, F>(&self, item: I, write: W) -> Result<O>
    where
        W: FnMut(Vec<I>) -> F + Send + 'static,
        F: Future<Output = Result<Vec<O>>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().expect("coalescer lock");
            queue.waiting.push((item, reply));
            let start = queue.flushing < self.max_flushing;
            queue.flushing += usize::from(start);
            start
        };
        if start {
            tokio::spawn(flush(self.queue.clone(), self.max_batch, write));
        }
        answer.await.unwrap_or_else(|_| Err(StoreError::Commit("the batch carrying this write was abandoned".into())))
    }
}

async fn flush<I, O, W, F>(queue: Arc<Mutex<Queue<I, O>>>, max_batch: usize, mut write: W)
where
    W: FnMut(Vec<I>) -> F,
    F: Future<Output = Result<Vec<O>>>,
{
    // Should `write` panic, this flush ends; if no other runs, the waiting callers hear an
    // error and the next caller starts over.
    let _reset = Reset(queue.clone());
    loop {
        let batch: Vec<(I, Reply<O>)> = {
            let mut queue = queue.lock().expect("coalescer lock");
            if queue.waiting.is_empty() {
                queue.flushing -= 1;
                return;
            }
            let n = queue.waiting.len().min(max_batch);
            queue.waiting.drain(..n).collect()
        };
        let (items, replies): (Vec<I>, Vec<Reply<O>>) = batch.into_iter().unzip();
        match write(items).await {
            // A caller left without an outcome hears that its batch abandoned it.
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                let error = error.to_string();
                replies.into_iter().for_each(|reply| drop(reply.send(Err(StoreError::Commit(error.clone())))));
            }
        }
    }
}

struct Reset<I, O>(Arc<Mutex<Queue<I, O>>>);

impl<I, O> Drop for Reset<I, O> {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(mut queue) = self.0.lock()
        {
            queue.flushing -= 1;
            if queue.flushing == 0 {
                queue.waiting.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_batches_and_each_gets_its_own_answer() {
        let coalescer = Arc::new(Coalescer::<u32, u32>::new(64, 1));
        let batches = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..500)
            .map(|n| {
                let (coalescer, batches) = (coalescer.clone(), batches.clone());
                tokio::spawn(async move {
                    coalescer
                        .submit(n, move |items: Vec<u32>| {
                            let batches = batches.clone();
                            async move {
                                assert!(items.len() <= 64, "bounded batches");
                                batches.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                                Ok(items.into_iter().map(|n| n * 10).collect())
                            }
                        })
                        .await
                })
            })
            .collect();
        for (n, caller) in callers.into_iter().enumerate() {
            assert_eq!(caller.await.unwrap().unwrap(), n as u32 * 10);
        }
        let batches = batches.load(Ordering::SeqCst);
        assert!((8..500).contains(&batches), "500 writes in {batches} batches");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_batches_may_be_in_flight_but_never_more_than_allowed() {
        let coalescer = Arc::new(Coalescer::<u32, u32>::new(16, 3));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let callers: Vec<_> = (0..300)
            .map(|n| {
                let (coalescer, running, most) = (coalescer.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    coalescer
                        .submit(n, move |items: Vec<u32>| {
                            let (running, most) = (running.clone(), most.clone());
                            async move {
                                most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                                running.fetch_sub(1, Ordering::SeqCst);
                                Ok(items)
                            }
                        })
                        .await
                })
            })
            .collect();
        for (n, caller) in callers.into_iter().enumerate() {
            assert_eq!(caller.await.unwrap().unwrap(), n as u32);
        }
        assert_eq!(most.load(Ordering::SeqCst), 3, "up to three batches in flight at once");
        assert_eq!(coalescer.queue.lock().unwrap().flushing, 0, "every flush ended");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_its_callers_and_the_next_caller_starts_over() {
        let coalescer = Coalescer::<u32, u32>::new(8, 1);
        let failed =
            coalescer.submit(1, |_| async { Err::<Vec<u32>, _>(StoreError::Commit("disk full".into())) }).await;
        assert!(failed.unwrap_err().to_string().contains("disk full"));
        let panicked = coalescer.submit(2, |_| async { panic!("a bug") }).await;
        assert!(panicked.is_err());
        assert_eq!(coalescer.submit(3, |items| async move { Ok(items) }).await.unwrap(), 3);
    }
}
